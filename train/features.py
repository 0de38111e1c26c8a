"""`python -m train features`: the VGG16 feature cache of a run (fc2, or block5_pool), resumable.

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

Batches are fixed slices of the image list, so a resumed run recomputes whole
batches exactly as an uninterrupted run would: the finished cache is the same.
For the same reason N processes can fill one cache together (`--shard I/N`:
batches b % N == I), on one machine or several sharing the run folder, and
leave the same files: `train.feature_shards` has the lock file (`.lock`), the
row writes and the shared done flags, `train.feature_status` the `--status`.
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

from demo.artifacts import atomic_write_json, read_json
from demo.errors import BadInput, CaptionerError, MissingFile
from demo.preprocess import PREPROCESS_VERSION, ImageError, load_image
from train.calibrated_vgg16 import encoder_spec
from train.captions_file import read_captions
from train.config import FeaturesConfig, to_json
from train.encoder import FEATURE_LAYERS, EncoderSpec, TopWeights, apply_top, build_encoder
from train.feature_shards import (
    WHOLE,
    CacheLock,
    RowWriter,
    Shard,
    left_by_shard,
    mark_done,
    parse_shard,
    record_shards,
    remove_stale_temporaries,
    save_done,
    shards_record_path,
)
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


def extract_features(cfg: FeaturesConfig, encoder=None) -> FeatureCache | None:
    """Fill the run's cache, computing only the batches not done yet; with `cfg.shard` ("I/N"), only this
    shard's (b % N == I), while other processes compute the rest into the same cache (`train.feature_shards`).

    Returns the complete cache; None when this process was one shard and other shards still have batches to
    compute: the last one to finish marks the cache complete. `encoder` lets a caller that already built the
    model for `cfg` (the benchmark) reuse it.
    """
    shard = _shard_to_extract(cfg)  # a bad --shard is refused before anything is read
    files = RunFiles(Path(cfg.run))
    paths = cache_paths(files, cfg.layer)
    image_root, image_ids = run_image_list(files)
    spec = encoder_spec(files, cfg.vgg_weights, cfg.seed, calibrate=True)
    wanted = expected_meta(spec.describe(), image_ids, cfg.batch_size, cfg.layer)
    with CacheLock(files.features_dir) as lock:
        with lock.exclusive():
            meta = _open_or_start(paths, wanted, image_ids, cfg.overwrite, lock)
            lock.join()
            if cfg.shard is not None:
                record_shards(paths["done"], shard)
            done = load_array(paths["done"], "finished-batch list")
            update_run_config(files, _config_section(cfg.layer), _recorded_options(cfg))
        todo = [b for b in shard.batches(len(done)) if not done[b]]
        if todo:
            started = time.perf_counter()
            encoder = build_encoder(spec, cfg.layer) if encoder is None else encoder
            log.info(f"features: {_share_text(shard, todo, len(done))} of {meta['batch_size']} to compute "
                     f"({meta['weights']}), cache {paths['array']}")
            num_todo = _compute(encoder, todo, meta, paths, image_root, image_ids, cfg.workers, lock,
                                f"{cfg.layer} features" + ("" if shard == WHOLE else f" shard {shard.label}"))
            elapsed = time.perf_counter() - started
            log.info(f"features: {num_todo} images in {elapsed:.1f} s ({num_todo / elapsed:.1f} images/s)")
        return _finish(files, paths, spec, cfg.layer, shard, lock)


# Options that say which part of the cache a process computes, or what to show: not settings of the cache, so
# config.json records the same `features` section for a sharded run as for a one-process one.
RUN_ONLY_OPTIONS = ("shard", "shards", "status")


def _recorded_options(cfg: FeaturesConfig) -> dict:
    return {k: v for k, v in to_json(cfg).items() if k not in RUN_ONLY_OPTIONS}


def _shard_to_extract(cfg: FeaturesConfig) -> Shard:
    """The shard this process computes (the whole cache without --shard)."""
    if cfg.shards is not None:
        raise BadInput("--shards N goes with --status (how to count the batches per shard); to compute one "
                       "shard of N, pass --shard I/N")
    return parse_shard(cfg.shard) or WHOLE


def _share_text(shard: Shard, todo: list[int], num_batches: int) -> str:
    """`12/50 batches`, or for a shard `shard 1/2: 12/25 batches` (of its own)."""
    if shard == WHOLE:
        return f"{len(todo)}/{num_batches} batches"
    return f"shard {shard.label}: {len(todo)}/{len(shard.batches(num_batches))} batches"


def _compute(encoder, todo: list[int], meta: dict, paths: dict[str, Path], image_root: Path, image_ids: list[str],
             workers: int, lock: CacheLock, desc: str) -> int:
    """Compute the batches `todo`; returns how many images that was.

    Each batch's rows are written and fsynced before the batch is flagged done (under the mutex), so a flag
    always means its rows are on disk: a process killed in between leaves one batch to recompute, never a
    flagged batch without its rows.
    """
    batch_size = meta["batch_size"]
    num_todo = sum(len(_batch_range(b, batch_size, len(image_ids))) for b in todo)
    with _row_writer(paths["array"], (meta["num_images"], meta["feature_dim"])) as writer, \
            tqdm(total=num_todo, desc=desc, unit="img") as bar:
        for b, pixels in decoded_batches(todo, batch_size, image_root, image_ids, workers):
            rows = _batch_range(b, batch_size, len(image_ids))
            writer.write(rows.start, np.asarray(encoder.predict_on_batch(pixels), dtype=np.float16))
            with lock.exclusive():
                if not writer.still_at_its_path():
                    raise CacheMismatch(f"the feature cache in {paths['array'].parent} was rebuilt by another "
                                        "process while this one extracted into it; run this command again")
                mark_done(paths["done"], b)
            bar.update(len(pixels))
    return num_todo


def _row_writer(path: Path, shape: tuple[int, int]) -> RowWriter:
    try:
        return RowWriter(path, shape)
    except (ValueError, OSError, EOFError) as exc:
        raise _unreadable(path, "feature array", exc) from exc


def _finish(files: RunFiles, paths: dict[str, Path], spec: EncoderSpec, layer: str, shard: Shard,
            lock: CacheLock) -> FeatureCache | None:
    """Whoever finds every batch done (under the mutex) marks the cache complete, whichever shard it ran:
    shards end in any order. Otherwise says what the other shards still have to do and returns None."""
    with lock.exclusive():
        done = load_array(paths["done"], "finished-batch list")
        if not done.all():
            who, whose = ("this process", "") if shard == WHOLE else (f"shard {shard.label}", " to other shards")
            left = f"{int((~done).sum())}/{len(done)} batches of the cache are left{whose}"
            if shard.count > 1:
                left += f" ({left_by_shard(done, shard.count)})"
            log.info(f"features: {who} has finished its batches; {left}: the last process to finish completes the "
                     f"cache. Progress: python -m train features --run {files.root} --layer {layer} --status")
            return None
        meta = read_json(paths["meta"], "feature cache meta")
        if not meta.get("complete"):
            atomic_write_json(paths["meta"], meta | {"complete": True})
        shards_record_path(paths["done"]).unlink(missing_ok=True)
    return load_cache(files, spec, layer)


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


def _open_or_start(paths: dict[str, Path], wanted: dict, image_ids: list[str], overwrite: bool,
                   lock: CacheLock) -> dict:
    """Reuse a matching cache (complete or partial); refuse a different one unless told to overwrite, and refuse
    to rebuild one that another process is extracting into now, whatever the options.

    The caller holds the mutex: of two shards started together one creates the cache, the other finds it here.
    """
    remove_stale_temporaries([*paths.values(), shards_record_path(paths["done"])])
    if paths["meta"].is_file():
        found = read_json(paths["meta"], "feature cache meta")
        problems = _differences(found, wanted)
        intact = paths["array"].is_file() and paths["done"].is_file()
        if not problems and intact:
            if found["batch_size"] != wanted["batch_size"]:
                log.info(f"features: resuming with the cache's batch size {found['batch_size']}")
            return found
        busy = lock.others_extracting()
        if problems and (busy or (not overwrite and not _nothing_computed(paths))):
            raise CacheMismatch(
                f"the feature cache in {paths['meta'].parent} was built with other settings:\n  "
                + "\n  ".join(problems)
                + ("\nAnother process is extracting into it now: give this one the same settings, or stop that "
                   "one first (then --overwrite rebuilds the cache)." if busy else
                   "\nPass --overwrite to rebuild it, or use the settings it was built with.")
            )
        if busy:
            raise CacheMismatch(f"the feature cache in {paths['meta'].parent} lacks its array or done flags while "
                                "another process is extracting into it: stop that one, then run this again")
    return _start(paths, wanted, image_ids)


def _nothing_computed(paths: dict[str, Path]) -> bool:
    """A cache without a single finished batch holds no work worth protecting."""
    try:
        return not np.load(paths["done"], allow_pickle=False).any()
    except (OSError, ValueError, EOFError):
        return not paths["array"].is_file()


def _start(paths: dict[str, Path], meta: dict, image_ids: list[str]) -> dict:
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


def write_complete_cache(files: RunFiles, features: np.ndarray, weights: str, batch_size: int = 16,
                         layer: str = "fc2") -> FeatureCache:
    """Store features computed elsewhere as a complete cache, rows in captions.json order.

    For stand-in features (`weights` starting with `STAND_IN_PREFIX`): the same files, meta and checks as
    an extracted cache, so `fit` and `evaluate` read it unchanged.
    """
    paths = cache_paths(files, layer)
    _, image_ids = run_image_list(files)
    shape = (len(image_ids), FEATURE_LAYERS[layer])
    if features.shape != shape:
        raise ValueError(f"features of shape {features.shape}, expected {shape}")
    with CacheLock(files.features_dir) as lock, lock.exclusive():
        meta = _start(paths, expected_meta(weights, image_ids, batch_size, layer), image_ids)
        with _row_writer(paths["array"], shape) as writer:
            writer.write(0, features)
        save_done(paths["done"], np.ones(-(-len(image_ids) // batch_size), dtype=bool))
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
    spec = encoder_spec(files, features_cfg["vgg_weights"], int(features_cfg.get("seed", 0)))
    if spec.describe() != cached:
        raise CacheMismatch(f"the VGG16 weights named in {files.config} ({spec.describe()}) are not the ones the "
                            f"feature cache was built with ({cached}); re-run `python -m train features`")
    return spec


def load_array(path: Path, what: str, mmap_mode: str | None = None) -> np.ndarray:
    """np.load that never unpickles, and names the file and the fix when it is not a plain array."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _unreadable(path, what, exc) from exc


def _unreadable(path: Path, what: str, exc: Exception) -> CacheMismatch:
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
    problems = _differences(meta, wanted)
    if problems:
        raise CacheMismatch(f"the feature cache in {paths['meta'].parent} does not match this run:\n  "
                            + "\n  ".join(problems) + "\nRun `python -m train features --overwrite`.")
    features = load_array(paths["array"], "feature array", mmap_mode="r")
    if features.shape != (len(image_ids), FEATURE_LAYERS[layer]) or features.dtype != np.float16:
        raise CacheMismatch(f"{paths['array']} has shape {features.shape} {features.dtype}, expected "
                            f"({len(image_ids)}, {FEATURE_LAYERS[layer]}) float16: run features with --overwrite")
    return FeatureCache(features, {image_id: row for row, image_id in enumerate(image_ids)}, meta)
