"""`python -m train features`: the VGG16 feature cache of a run (fc2, or block5_pool), resumable.

The cache's files, their format and checks are `train.feature_cache`'s; this module fills them.

Batches are fixed slices of the image list, so a resumed run recomputes whole
batches exactly as an uninterrupted run would: the finished cache is the same.
For the same reason N processes can fill one cache together (`--shard I/N`:
batches b % N == I), on one machine or several sharing the run folder, and
leave the same files: `train.feature_shards` has the lock file (`.lock`), the
row writes and the shared done flags, `train.feature_status` the `--status`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from demo.artifacts import atomic_write_json, read_json
from demo.errors import BadInput
from demo.preprocess import ImageError, load_image
from train.calibrated_vgg16 import encoder_spec
from train.config import FeaturesConfig, to_json
from train.encoder import EncoderSpec, build_encoder
from train.feature_cache import (
    CacheMismatch,
    FeatureCache,
    cache_paths,
    config_section,
    differences,
    expected_meta,
    load_array,
    load_cache,
    row_writer,
    run_image_list,
    start_cache,
)
from train.feature_shards import (
    WHOLE,
    CacheLock,
    Shard,
    left_by_shard,
    mark_done,
    parse_shard,
    record_shards,
    remove_stale_temporaries,
    shards_record_path,
)
from train.run_files import RunFiles, update_run_config

log = logging.getLogger(__name__)


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
            meta = _open_orstart_cache(paths, wanted, image_ids, cfg.overwrite, lock)
            lock.join()
            if cfg.shard is not None:
                record_shards(paths["done"], shard)
            done = load_array(paths["done"], "finished-batch list")
            update_run_config(files, config_section(cfg.layer), _recorded_options(cfg))
        todo = [b for b in shard.batches(len(done)) if not done[b]]
        if todo:
            started = time.perf_counter()
            encoder = build_encoder(spec, cfg.layer) if encoder is None else encoder
            engine = getattr(encoder, "engine", "keras")
            log.info(f"features: {_share_text(shard, todo, len(done))} of {meta['batch_size']} to compute "
                     f"({meta['weights']}, {engine}), cache {paths['array']}")
            _record_engine(paths["meta"], engine, lock)
            num_todo = _compute(encoder, todo, meta, paths, image_root, image_ids, cfg.workers, lock,
                                f"{cfg.layer} features" + ("" if shard == WHOLE else f" shard {shard.label}"))
            elapsed = time.perf_counter() - started
            log.info(f"features: {num_todo} images in {elapsed:.1f} s ({num_todo / elapsed:.1f} images/s)")
        return _finish(files, paths, spec, cfg.layer, shard, lock)


def _record_engine(meta_path: Path, engine: str, lock: CacheLock) -> None:
    """The meta lists every engine that computed rows of the cache (Keras, ONNX Runtime and its provider): they
    agree within the export's parity bound, so a cache may mix them, and says so."""
    with lock.exclusive():
        meta = read_json(meta_path, "feature cache meta")
        engines = sorted(set(meta.get("engines", [])) | {engine})
        if engines != meta.get("engines"):
            atomic_write_json(meta_path, meta | {"engines": engines})


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
    with row_writer(paths["array"], (meta["num_images"], meta["feature_dim"])) as writer, \
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


def _open_orstart_cache(paths: dict[str, Path], wanted: dict, image_ids: list[str], overwrite: bool,
                   lock: CacheLock) -> dict:
    """Reuse a matching cache (complete or partial); refuse a different one unless told to overwrite, and refuse
    to rebuild one that another process is extracting into now, whatever the options.

    The caller holds the mutex: of two shards started together one creates the cache, the other finds it here.
    """
    remove_stale_temporaries([*paths.values(), shards_record_path(paths["done"])])
    if paths["meta"].is_file():
        found = read_json(paths["meta"], "feature cache meta")
        problems = differences(found, wanted)
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
    return start_cache(paths, wanted, image_ids)


def _nothing_computed(paths: dict[str, Path]) -> bool:
    """A cache without a single finished batch holds no work worth protecting."""
    try:
        return not np.load(paths["done"], allow_pickle=False).any()
    except (OSError, ValueError, EOFError):
        return not paths["array"].is_file()


