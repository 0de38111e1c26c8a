"""`python -m train features --status`: how far a feature cache is, in all and per shard.

Reads the cache's small files only (each replaced atomically by its writers), so it needs no lock, computes
nothing and imports no TensorFlow: safe to run at any time, from any machine that sees the run folder.
"""
from __future__ import annotations

from pathlib import Path

from demo.artifacts import read_json
from demo.errors import BadInput, MissingFile
from train.config import FeaturesConfig
from train.feature_cache import cache_paths, load_array
from train.feature_shards import extracting_now, parse_shard, per_shard, recorded_shards, shards_record_path
from train.run_files import RunFiles


def cache_status(cfg: FeaturesConfig) -> str:
    """`--status`: how far the cache is, in all and per shard, as a table; computes nothing and waits for no
    lock (the files it reads are each replaced atomically by their writers)."""
    files = RunFiles(Path(cfg.run))
    paths = cache_paths(files, cfg.layer)
    count, source = _shard_count(cfg, paths["done"])
    if not paths["meta"].is_file():
        raise MissingFile(f"no {cfg.layer} feature cache in {paths['meta'].parent}: nothing extracted yet; start it "
                          f"with `python -m train features --run {files.root} --layer {cfg.layer}` (add --shard I/N "
                          "to run shard I of N)")
    meta = read_json(paths["meta"], "feature cache meta")
    done = load_array(paths["done"], "finished-batch list")
    running = {True: "yes, some process is extracting into it now", False: "no process is extracting into it now",
               None: "cannot tell (lock file not writable)"}[extracting_now(files.features_dir)]
    table = [("shard", "batches done")] + [(shard.label, f"{finished}/{total}")
                                           for shard, finished, total in per_shard(done, count)]
    if count > 1:
        table.append(("all", f"{int(done.sum())}/{len(done)}"))
    return "\n".join([
        f"cache     {paths['array']}",
        f"weights   {meta.get('weights')} (preprocessing {meta.get('preprocess')})",
        f"images    {meta.get('num_images')} in {len(done)} batches of {meta.get('batch_size')}",
        f"complete  {'yes' if meta.get('complete') else 'no'}: {int(done.sum())}/{len(done)} batches done",
        f"running   {running}",
        f"shards    {count} ({source})",
        "",
        *(f"{label:<7}{value}" for label, value in table),
    ])


def _shard_count(cfg: FeaturesConfig, done_path: Path) -> tuple[int, str]:
    """How many shards to count the batches for, and where that number came from: `--shards N` or
    `--shard I/N`, else the record the last sharded start left (until the cache completes), else 1."""
    asked = parse_shard(cfg.shard)
    if cfg.shards is not None and (cfg.shards < 1 or (asked and asked.count != cfg.shards)):
        raise BadInput(f"--shards {cfg.shards}: expected the number of shards N (at least 1)"
                       + (f", the same as --shard {cfg.shard}'s" if asked else ""))
    if cfg.shards:
        return cfg.shards, "--shards"
    if asked:
        return asked.count, "--shard"
    recorded = recorded_shards(done_path)
    if recorded:
        return recorded, f"recorded in {shards_record_path(done_path).name} by the last sharded start"
    return 1, "the whole cache; --shards N counts per shard of N"
