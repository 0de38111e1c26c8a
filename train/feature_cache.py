"""The feature cache's format on disk and its checks: what `train.features` fills and `fit`, `evaluate` and the
export read.

Layout in `RUN/features/` for the fc2 cache (what `fit` trains on):
- `fc2.npy`: float16 (N, 4096), memory-mapped on read;
- `index.json`: the image ids in row order;
- `meta.json`: what produced it (weights, preprocessing version, batch size)
  and whether it is complete; a cache whose meta differs from the request is
  refused rather than silently mixed;
- `done.npy`: one flag per batch, set after the batch's rows are on disk.

The block5_pool cache (`--layer block5_pool`, what `fit --fine-tune-top` trains
fc1 and fc2 on) sits beside it as `block5_pool.npy` (float16 (N, 25088)) with
`block5_pool.index.json`, `block5_pool.meta.json` and `block5_pool.done.npy`.
Its meta names `model: vgg16-block5_pool` and `feature_dim: 25088`, identity
keys both: one cache can never be read as the other.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demo.artifacts import atomic_write_json, read_json
from demo.errors import CaptionerError, MissingFile
from demo.preprocess import PREPROCESS_VERSION
from train.captions_file import read_captions
from train.encoder import FEATURE_LAYERS, EncoderSpec
from train.feature_shards import RowWriter, save_done, shards_record_path
from train.run_files import RunFiles

CACHE_FORMAT = "vgg16-lstm-captioner/fc2-cache"
POOL_CACHE_FORMAT = "vgg16-lstm-captioner/block5_pool-cache"
CACHE_VERSION = 1
DTYPE = "float16"
# `weights` of a cache whose rows were not computed by VGG16 (bench.flickr_scale_model): trainable on, never exported.
STAND_IN_PREFIX = "stand-in:"


class CacheMismatch(CaptionerError, RuntimeError):
    """An existing cache was built with other settings or for other images."""


@dataclass
class FeatureCache:
    features: np.ndarray  # read-only memmap (N, 4096) float16
    rows: dict[str, int]
    meta: dict

    def lookup(self, image_ids: list[str]) -> np.ndarray:
        return np.asarray(self.features[[self.rows[i] for i in image_ids]], dtype=np.float32)


def cache_paths(files: RunFiles, layer: str = "fc2") -> dict[str, Path]:
    d = files.features_dir
    if layer == "fc2":
        return {"array": d / "fc2.npy", "index": d / "index.json", "meta": d / "meta.json", "done": d / "done.npy"}
    if layer not in FEATURE_LAYERS:
        raise ValueError(f"unknown feature layer {layer!r}")
    return {"array": d / f"{layer}.npy", "index": d / f"{layer}.index.json", "meta": d / f"{layer}.meta.json",
            "done": d / f"{layer}.done.npy"}


def cache_format(layer: str) -> str:
    return CACHE_FORMAT if layer == "fc2" else POOL_CACHE_FORMAT


def run_image_list(files: RunFiles) -> tuple[Path, list[str]]:
    """The image root and all image ids of the run, in the order of captions.json."""
    captions = read_captions(files.captions)
    return captions.image_root, captions.ids()


def expected_meta(weights: str, image_ids: list[str], batch_size: int, layer: str = "fc2") -> dict:
    """The cache's meta; `weights` is `EncoderSpec.describe()`, or a `STAND_IN_PREFIX` string."""
    digest = hashlib.sha256("\n".join(image_ids).encode("utf-8")).hexdigest()
    return {
        "format": cache_format(layer),
        "version": CACHE_VERSION,
        "model": f"vgg16-{layer}",
        "weights": weights,
        "preprocess": PREPROCESS_VERSION,
        "feature_dim": FEATURE_LAYERS[layer],
        "dtype": DTYPE,
        "num_images": len(image_ids),
        "images_sha256": digest,
        "batch_size": batch_size,
    }


IDENTITY_KEYS = ("format", "version", "model", "weights", "preprocess", "feature_dim", "dtype",
                 "num_images", "images_sha256")


def differences(found: dict, wanted: dict) -> list[str]:
    return [f"{k}: cache has {found.get(k)!r}, requested {wanted[k]!r}"
            for k in IDENTITY_KEYS if found.get(k) != wanted[k]]


def start_cache(paths: dict[str, Path], meta: dict, image_ids: list[str]) -> dict:
    """A new, empty cache (all flags false); the caller holds the mutex."""
    paths["array"].parent.mkdir(parents=True, exist_ok=True)
    for path in (*paths.values(), shards_record_path(paths["done"])):
        path.unlink(missing_ok=True)
    tmp = paths["array"].with_name(f".{paths['array'].name}.tmp")
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPE, shape=(meta["num_images"], meta["feature_dim"]))
    del array
    tmp.replace(paths["array"])
    num_batches = -(-meta["num_images"] // meta["batch_size"])
    save_done(paths["done"], np.zeros(num_batches, dtype=bool))
    atomic_write_json(paths["index"], {"format": meta["format"], "image_ids": image_ids})
    meta = meta | {"complete": False}
    atomic_write_json(paths["meta"], meta)
    return meta


def row_writer(path: Path, shape: tuple[int, int]) -> RowWriter:
    try:
        return RowWriter(path, shape)
    except (ValueError, OSError, EOFError) as exc:
        raise unreadable(path, "feature array", exc) from exc


def config_section(layer: str) -> str:
    """config.json keeps each cache's settings apart: `features` (fc2, what export reads) and `features_<layer>`."""
    return "features" if layer == "fc2" else f"features_{layer}"


def load_array(path: Path, what: str, mmap_mode: str | None = None) -> np.ndarray:
    """np.load that never unpickles, and names the file and the fix when it is not a plain array."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise unreadable(path, what, exc) from exc


def unreadable(path: Path, what: str, exc: Exception) -> CacheMismatch:
    """A cache file that cannot be read as `what`: the error names it and the fix (reading or writing alike)."""
    return CacheMismatch(f"{path} is not a readable {what} ({exc}); "
                         "run `python -m train features --overwrite` to rebuild the cache")


def load_cache(files: RunFiles, spec: EncoderSpec | None = None, layer: str = "fc2") -> FeatureCache:
    """Open a complete cache read-only; with `spec`, refuse one built with other weights."""
    paths = cache_paths(files, layer)
    if not paths["meta"].is_file():
        raise MissingFile(f"no {layer} feature cache in {paths['meta'].parent}: run `python -m train features "
                          f"--run {files.root} --layer {layer}`")
    meta = read_json(paths["meta"], "feature cache meta")
    if not meta.get("complete"):
        raise CacheMismatch(f"the feature cache in {paths['meta'].parent} is incomplete: "
                            "run `python -m train features` again to finish it")
    _, image_ids = run_image_list(files)
    indexed = read_json(paths["index"], "feature cache index").get("image_ids")
    if indexed != image_ids:
        raise CacheMismatch(f"{paths['index']} lists other images than {files.captions}: the run was "
                            "prepared again since; run `python -m train features --overwrite`")
    wanted = expected_meta(meta.get("weights") if spec is None else spec.describe(), image_ids, meta["batch_size"],
                           layer)
    problems = differences(meta, wanted)
    if problems:
        raise CacheMismatch(f"the feature cache in {paths['meta'].parent} does not match this run:\n  "
                            + "\n  ".join(problems) + "\nRun `python -m train features --overwrite`.")
    features = load_array(paths["array"], "feature array", mmap_mode="r")
    if features.shape != (len(image_ids), FEATURE_LAYERS[layer]) or features.dtype != np.float16:
        raise CacheMismatch(f"{paths['array']} has shape {features.shape} {features.dtype}, expected "
                            f"({len(image_ids)}, {FEATURE_LAYERS[layer]}) float16: run features with --overwrite")
    return FeatureCache(features, {image_id: row for row, image_id in enumerate(image_ids)}, meta)
