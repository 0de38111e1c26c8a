"""`python -m train features`: the VGG16 feature cache of a run (fc2, or block5_pool), resumable.

Layout in `RUN/features/` for the fc2 cache (what `fit` trains on):
- `fc2.npy`: float16 (N, 4096), memory-mapped on read;
- `index.json`: the image ids in row order;
- `meta.json`: what produced it (weights, preprocessing version, batch size)
  and whether it is complete; a cache whose meta differs from the request is
  refused rather than silently mixed;
- `done.npy`: one flag per batch, written after the batch's rows are flushed.

The block5_pool cache (`--layer block5_pool`, what `fit --fine-tune-top` trains
fc1 and fc2 on) sits beside it as `block5_pool.npy` (float16 (N, 25088)) with
`block5_pool.index.json`, `block5_pool.meta.json` and `block5_pool.done.npy`.
Its meta names `model: vgg16-block5_pool` and `feature_dim: 25088`, identity
keys both: one cache can never be read as the other.

Batches are fixed slices of the image list, so a resumed run recomputes whole
batches exactly as an uninterrupted run would: the finished cache is the same.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from demo.artifacts import atomic_write_bytes, atomic_write_json, read_json
from demo.errors import CaptionerError, MissingFile
from demo.preprocess import PREPROCESS_VERSION, ImageError, load_image
from train.captions_file import read_captions
from train.config import FeaturesConfig, to_json
from train.encoder import FEATURE_LAYERS, EncoderSpec, TopWeights, apply_top, build_encoder
from train.run_files import RunFiles, update_run_config

log = logging.getLogger(__name__)

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


def _cache_format(layer: str) -> str:
    return CACHE_FORMAT if layer == "fc2" else POOL_CACHE_FORMAT


def run_image_list(files: RunFiles) -> tuple[Path, list[str]]:
    """The image root and all image ids of the run, in the order of captions.json."""
    captions = read_captions(files.captions)
    return captions.image_root, captions.ids()


def expected_meta(weights: str, image_ids: list[str], batch_size: int, layer: str = "fc2") -> dict:
    """The cache's meta; `weights` is `EncoderSpec.describe()`, or a `STAND_IN_PREFIX` string."""
    digest = hashlib.sha256("\n".join(image_ids).encode("utf-8")).hexdigest()
    return {
        "format": _cache_format(layer),
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


def _differences(found: dict, wanted: dict) -> list[str]:
    return [f"{k}: cache has {found.get(k)!r}, requested {wanted[k]!r}"
            for k in IDENTITY_KEYS if found.get(k) != wanted[k]]


def extract_features(cfg: FeaturesConfig, encoder=None) -> FeatureCache:
    """Fill the run's cache, computing only the batches not done yet.

    `encoder` lets a caller that already built the model for `cfg` (the benchmark) reuse it.
    """
    files = RunFiles(Path(cfg.run))
    paths = cache_paths(files, cfg.layer)
    image_root, image_ids = run_image_list(files)
    spec = EncoderSpec(cfg.vgg_weights, cfg.seed)
    wanted = expected_meta(spec.describe(), image_ids, cfg.batch_size, cfg.layer)
    meta = _open_or_start(paths, wanted, image_ids, cfg.overwrite)
    done = load_array(paths["done"], "finished-batch list")
    batch_size = meta["batch_size"]
    todo = [b for b in range(len(done)) if not done[b]]
    update_run_config(files, _config_section(cfg.layer), to_json(cfg))
    if todo:
        started = time.perf_counter()
        encoder = build_encoder(spec, cfg.layer) if encoder is None else encoder
        log.info(f"features: {len(todo)}/{len(done)} batches of {batch_size} to compute "
                 f"({meta['weights']}), cache {paths['array']}")
        array = load_array(paths["array"], "feature array", mmap_mode="r+")
        num_todo = sum(len(_batch_range(b, batch_size, len(image_ids))) for b in todo)
        with tqdm(total=num_todo, desc=f"{cfg.layer} features", unit="img") as bar:
            for b, pixels in decoded_batches(todo, batch_size, image_root, image_ids, cfg.workers):
                rows = _batch_range(b, batch_size, len(image_ids))
                array[rows.start:rows.stop] = np.asarray(encoder.predict_on_batch(pixels), dtype=np.float16)
                array.flush()
                done[b] = True
                _save_done(paths["done"], done)
                bar.update(len(pixels))
        del array
        elapsed = time.perf_counter() - started
        log.info(f"features: {num_todo} images in {elapsed:.1f} s ({num_todo / elapsed:.1f} images/s)")
    meta["complete"] = True
    atomic_write_json(paths["meta"], meta)
    return load_cache(files, spec, cfg.layer)


def _config_section(layer: str) -> str:
    """config.json keeps each cache's settings apart: `features` (fc2, what export reads) and `features_<layer>`."""
    return "features" if layer == "fc2" else f"features_{layer}"


def _batch_range(batch: int, batch_size: int, total: int) -> range:
    return range(batch * batch_size, min(total, (batch + 1) * batch_size))


def decoded_batches(
    batches: list[int], batch_size: int, root: Path, ids: list[str], workers: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the next batch in threads while the current one is in the forward pass."""

    def decode(batch: int) -> np.ndarray:
        rows = _batch_range(batch, batch_size, len(ids))
        try:
            return np.stack([load_image(root / ids[i]) for i in rows]).astype(np.float32)
        except ImageError as exc:
            raise ImageError(f"{exc}. The image changed since `prepare`; run prepare again.") from exc

    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = [pool.submit(decode, b) for b in batches[:2]]
        for position, batch in enumerate(batches):
            pixels = pending[position].result()
            if position + 2 < len(batches):
                pending.append(pool.submit(decode, batches[position + 2]))
            yield batch, pixels


def _open_or_start(paths: dict[str, Path], wanted: dict, image_ids: list[str], overwrite: bool) -> dict:
    """Reuse a matching cache (complete or partial); refuse a different one unless told to overwrite."""
    if paths["meta"].is_file():
        found = read_json(paths["meta"], "feature cache meta")
        problems = _differences(found, wanted)
        intact = paths["array"].is_file() and paths["done"].is_file()
        if not problems and intact:
            if found["batch_size"] != wanted["batch_size"]:
                log.info(f"features: resuming with the cache's batch size {found['batch_size']}")
            return found
        if problems and not overwrite and not _nothing_computed(paths):
            raise CacheMismatch(
                f"the feature cache in {paths['meta'].parent} was built with other settings:\n  "
                + "\n  ".join(problems)
                + "\nPass --overwrite to rebuild it, or use the settings it was built with."
            )
    return _start(paths, wanted, image_ids)


def _nothing_computed(paths: dict[str, Path]) -> bool:
    """A cache without a single finished batch holds no work worth protecting."""
    try:
        return not np.load(paths["done"], allow_pickle=False).any()
    except (OSError, ValueError, EOFError):
        return not paths["array"].is_file()


def _start(paths: dict[str, Path], meta: dict, image_ids: list[str]) -> dict:
    paths["array"].parent.mkdir(parents=True, exist_ok=True)
    for path in paths.values():
        path.unlink(missing_ok=True)
    tmp = paths["array"].with_name(f".{paths['array'].name}.tmp")
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPE, shape=(meta["num_images"], meta["feature_dim"]))
    del array
    tmp.replace(paths["array"])
    num_batches = -(-meta["num_images"] // meta["batch_size"])
    _save_done(paths["done"], np.zeros(num_batches, dtype=bool))
    atomic_write_json(paths["index"], {"format": meta["format"], "image_ids": image_ids})
    meta = meta | {"complete": False}
    atomic_write_json(paths["meta"], meta)
    return meta


def _save_done(path: Path, done: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, done, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def write_complete_cache(files: RunFiles, features: np.ndarray, weights: str, batch_size: int = 16,
                         layer: str = "fc2") -> FeatureCache:
    """Store features computed elsewhere as a complete cache, rows in captions.json order.

    For stand-in features (`weights` starting with `STAND_IN_PREFIX`): the same files, meta and checks as
    an extracted cache, so `fit` and `evaluate` read it unchanged.
    """
    paths = cache_paths(files, layer)
    _, image_ids = run_image_list(files)
    if features.shape != (len(image_ids), FEATURE_LAYERS[layer]):
        raise ValueError(f"features of shape {features.shape}, expected ({len(image_ids)}, {FEATURE_LAYERS[layer]})")
    meta = _start(paths, expected_meta(weights, image_ids, batch_size, layer), image_ids)
    array = load_array(paths["array"], "feature array", mmap_mode="r+")
    array[:] = features.astype(np.float16)
    array.flush()
    del array
    _save_done(paths["done"], np.ones(-(-len(image_ids) // batch_size), dtype=bool))
    atomic_write_json(paths["meta"], meta | {"complete": True})
    return load_cache(files, layer=layer)


def trained_layer(files: RunFiles) -> str:
    """The cache `fit` trained on: block5_pool when it fine-tuned fc1 and fc2 (recorded in config.json)."""
    fit_cfg = read_json(files.config, "run config").get("fit", {}) if files.config.is_file() else {}
    return "block5_pool" if fit_cfg.get("fine_tune_top") else "fc2"


def run_encoder_spec(files: RunFiles) -> EncoderSpec:
    """The VGG16 weights this run's feature cache was built with: export must rebuild exactly that network."""
    return encoder_spec_of(files, trained_layer(files))


def trained_features(files: RunFiles, image_ids: list[str], top: TopWeights | None) -> np.ndarray:
    """What the decoder sees for these images: their fc2 cache rows, or, for a run that fine-tuned fc1 and fc2
    (`top`, from `train.model.fine_tuned_top`), their block5_pool rows through the fine-tuned layers."""
    if top is None:
        return load_cache(files).lookup(image_ids)
    return apply_top(load_cache(files, layer="block5_pool").lookup(image_ids), top)


def encoder_spec_of(files: RunFiles, layer: str) -> EncoderSpec:
    """The VGG16 weights the run's `layer` cache was built with."""
    features_cfg = read_json(files.config, "run config").get(_config_section(layer))
    if not features_cfg:
        raise MissingFile(f"{files.config} has no {_config_section(layer)} section: run `python -m train features "
                          f"--layer {layer}` first")
    cached = read_json(cache_paths(files, layer)["meta"], "feature cache meta")["weights"]
    if str(cached).startswith(STAND_IN_PREFIX):
        raise CacheMismatch(f"the feature cache in {files.features_dir} holds stand-in features ({cached}), not "
                            "VGG16 fc2 features: no encoder made them, so none can be exported; export the decoder "
                            "alone (--decoder-only) or run `python -m train features --overwrite` on real images")
    spec = EncoderSpec(features_cfg["vgg_weights"], int(features_cfg.get("seed", 0)))
    if spec.describe() != cached:
        raise CacheMismatch(f"the VGG16 weights named in {files.config} ({spec.describe()}) are not the ones the "
                            f"feature cache was built with ({cached}); re-run `python -m train features`")
    return spec


def load_array(path: Path, what: str, mmap_mode: str | None = None) -> np.ndarray:
    """np.load that never unpickles, and names the file and the fix when it is not a plain array."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CacheMismatch(f"{path} is not a readable {what} ({exc}); "
                            "run `python -m train features --overwrite` to rebuild the cache") from exc


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
    problems = _differences(meta, wanted)
    if problems:
        raise CacheMismatch(f"the feature cache in {paths['meta'].parent} does not match this run:\n  "
                            + "\n  ".join(problems) + "\nRun `python -m train features --overwrite`.")
    features = load_array(paths["array"], "feature array", mmap_mode="r")
    if features.shape != (len(image_ids), FEATURE_LAYERS[layer]) or features.dtype != np.float16:
        raise CacheMismatch(f"{paths['array']} has shape {features.shape} {features.dtype}, expected "
                            f"({len(image_ids)}, {FEATURE_LAYERS[layer]}) float16: run features with --overwrite")
    return FeatureCache(features, {image_id: row for row, image_id in enumerate(image_ids)}, meta)
