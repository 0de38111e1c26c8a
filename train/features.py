"""`python -m train features`: the VGG16 fc2 feature cache of a run, resumable.

Layout in `RUN/features/`:
- `fc2.npy`: float16 (N, 4096), memory-mapped on read;
- `index.json`: the image ids in row order;
- `meta.json`: what produced it (weights, preprocessing version, batch size)
  and whether it is complete; a cache whose meta differs from the request is
  refused rather than silently mixed;
- `done.npy`: one flag per batch, written after the batch's rows are flushed.

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
from train.encoder import FEATURE_DIM, EncoderSpec, build_encoder
from train.run_files import RunFiles, update_run_config

log = logging.getLogger(__name__)

CACHE_FORMAT = "vgg16-lstm-captioner/fc2-cache"
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


def cache_paths(files: RunFiles) -> dict[str, Path]:
    d = files.features_dir
    return {"array": d / "fc2.npy", "index": d / "index.json", "meta": d / "meta.json", "done": d / "done.npy"}


def run_image_list(files: RunFiles) -> tuple[Path, list[str]]:
    """The image root and all image ids of the run, in the order of captions.json."""
    captions = read_captions(files.captions)
    return captions.image_root, captions.ids()


def expected_meta(weights: str, image_ids: list[str], batch_size: int) -> dict:
    """The cache's meta; `weights` is `EncoderSpec.describe()`, or a `STAND_IN_PREFIX` string."""
    digest = hashlib.sha256("\n".join(image_ids).encode("utf-8")).hexdigest()
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "model": "vgg16-fc2",
        "weights": weights,
        "preprocess": PREPROCESS_VERSION,
        "feature_dim": FEATURE_DIM,
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
    paths = cache_paths(files)
    image_root, image_ids = run_image_list(files)
    spec = EncoderSpec(cfg.vgg_weights, cfg.seed)
    meta = _open_or_start(paths, expected_meta(spec.describe(), image_ids, cfg.batch_size), image_ids, cfg.overwrite)
    done = load_array(paths["done"], "finished-batch list")
    batch_size = meta["batch_size"]
    todo = [b for b in range(len(done)) if not done[b]]
    update_run_config(files, "features", to_json(cfg))
    if todo:
        started = time.perf_counter()
        encoder = build_encoder(spec) if encoder is None else encoder
        log.info(f"features: {len(todo)}/{len(done)} batches of {batch_size} to compute "
                 f"({meta['weights']}), cache {paths['array']}")
        array = load_array(paths["array"], "feature array", mmap_mode="r+")
        num_todo = sum(len(_batch_range(b, batch_size, len(image_ids))) for b in todo)
        with tqdm(total=num_todo, desc="fc2 features", unit="img") as bar:
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
    return load_cache(files, spec)


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
    tmp = paths["array"].with_name(".fc2.npy.tmp")
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPE, shape=(meta["num_images"], FEATURE_DIM))
    del array
    tmp.replace(paths["array"])
    num_batches = -(-meta["num_images"] // meta["batch_size"])
    _save_done(paths["done"], np.zeros(num_batches, dtype=bool))
    atomic_write_json(paths["index"], {"format": CACHE_FORMAT, "image_ids": image_ids})
    meta = meta | {"complete": False}
    atomic_write_json(paths["meta"], meta)
    return meta


def _save_done(path: Path, done: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, done, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def write_complete_cache(files: RunFiles, features: np.ndarray, weights: str, batch_size: int = 16) -> FeatureCache:
    """Store features computed elsewhere as a complete cache, rows in captions.json order.

    For stand-in features (`weights` starting with `STAND_IN_PREFIX`): the same files, meta and checks as
    an extracted cache, so `fit` and `evaluate` read it unchanged.
    """
    paths = cache_paths(files)
    _, image_ids = run_image_list(files)
    if features.shape != (len(image_ids), FEATURE_DIM):
        raise ValueError(f"features of shape {features.shape}, expected ({len(image_ids)}, {FEATURE_DIM})")
    meta = _start(paths, expected_meta(weights, image_ids, batch_size), image_ids)
    array = load_array(paths["array"], "feature array", mmap_mode="r+")
    array[:] = features.astype(np.float16)
    array.flush()
    del array
    _save_done(paths["done"], np.ones(-(-len(image_ids) // batch_size), dtype=bool))
    atomic_write_json(paths["meta"], meta | {"complete": True})
    return load_cache(files)


def run_encoder_spec(files: RunFiles) -> EncoderSpec:
    """The VGG16 weights this run's feature cache was built with: export must rebuild exactly that network."""
    features_cfg = read_json(files.config, "run config").get("features")
    if not features_cfg:
        raise MissingFile(f"{files.config} has no features section: run `python -m train features` first")
    cached = read_json(cache_paths(files)["meta"], "feature cache meta")["weights"]
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


def load_cache(files: RunFiles, spec: EncoderSpec | None = None) -> FeatureCache:
    """Open a complete cache read-only; with `spec`, refuse one built with other weights."""
    paths = cache_paths(files)
    if not paths["meta"].is_file():
        raise MissingFile(f"no feature cache in {paths['meta'].parent}: run `python -m train features`")
    meta = read_json(paths["meta"], "feature cache meta")
    if not meta.get("complete"):
        raise CacheMismatch(f"the feature cache in {paths['meta'].parent} is incomplete: "
                            "run `python -m train features` again to finish it")
    _, image_ids = run_image_list(files)
    indexed = read_json(paths["index"], "feature cache index").get("image_ids")
    if indexed != image_ids:
        raise CacheMismatch(f"{paths['index']} lists other images than {files.captions}: the run was "
                            "prepared again since; run `python -m train features --overwrite`")
    wanted = expected_meta(meta.get("weights") if spec is None else spec.describe(), image_ids, meta["batch_size"])
    problems = _differences(meta, wanted)
    if problems:
        raise CacheMismatch(f"the feature cache in {paths['meta'].parent} does not match this run:\n  "
                            + "\n  ".join(problems) + "\nRun `python -m train features --overwrite`.")
    features = load_array(paths["array"], "feature array", mmap_mode="r")
    if features.shape != (len(image_ids), FEATURE_DIM) or features.dtype != np.float16:
        raise CacheMismatch(f"{paths['array']} has shape {features.shape} {features.dtype}, expected "
                            f"({len(image_ids)}, {FEATURE_DIM}) float16: run features with --overwrite")
    return FeatureCache(features, {image_id: row for row, image_id in enumerate(image_ids)}, meta)
