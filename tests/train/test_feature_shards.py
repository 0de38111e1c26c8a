"""`python -m train features --shard I/N`: N processes fill one cache together and leave, byte for byte, the
files one process leaves; a killed shard resumes; `--status` counts per shard; foreign settings are refused.

The slow tests run real processes (seeded random-init VGG16, as in test_features.py) on real files, started
together where the point is concurrency. The fast ones need no VGG16: option checks and refusals come before
it is built, and their partial caches are written in process by the real cache code with `PixelEncoder`
standing in for VGG16.

10 images in batches of 2: 5 batches; shard 0/2 owns batches 0, 2, 4 and shard 1/2 batches 1, 3.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures_datasets import PixelEncoder, prepared_flickr30k_run
from tests.helpers import REPO, run_module

NUM_IMAGES = 10
BATCH = 2
NUM_BATCHES = NUM_IMAGES // BATCH


def features_args(run: Path, *extra: str) -> list[str]:
    """`python -m train features` arguments for a small seeded random-init cache."""
    return ["features", "--run", str(run), "--vgg-weights", "none", "--batch-size", str(BATCH), *extra]


def run_features(run: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_module("train", *features_args(run, *extra))


def cache_files(run: Path) -> dict[str, bytes]:
    """Every file of the features folder, hidden ones included, by name."""
    return {path.name: path.read_bytes() for path in sorted((run / "features").iterdir())}


def status(run: Path, *extra: str) -> tuple[dict[str, str], str]:
    """`--status`: ({shard label or 'all': 'done/total'}, the whole output)."""
    result = run_module("train", "features", "--run", str(run), "--status", *extra)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.split("\nshard  batches done\n", 1)[1].splitlines()
    return dict(row.split() for row in rows), result.stdout


def done_flags(run: Path) -> np.ndarray:
    """done.npy as it is now; all false while it is being created or cannot be read yet."""
    try:
        return np.load(run / "features" / "done.npy", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return np.zeros(NUM_BATCHES, bool)


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory) -> Path:
    """Runs prepared under one root list the same images, so their caches can be compared byte for byte."""
    return tmp_path_factory.mktemp("shards")


@pytest.fixture(scope="module")
def one_process_run(shard_root) -> Path:
    """The reference: the cache one `python -m train features` process makes."""
    run = prepared_flickr30k_run(shard_root, "one_process", NUM_IMAGES)
    result = run_features(run)
    assert result.returncode == 0, result.stderr
    return run


@pytest.mark.slow
def test_two_shards_started_together_make_the_one_process_cache(one_process_run, shard_root):
    run = prepared_flickr30k_run(shard_root, "two_shards", NUM_IMAGES)
    logs = [run.parent / f"two_shards-{i}.log" for i in range(2)]
    shards = [subprocess.Popen([sys.executable, "-m", "train", *features_args(run, "--shard", f"{i}/2")], cwd=REPO,
                               stdout=open(log, "w"), stderr=subprocess.STDOUT) for i, log in enumerate(logs)]
    try:
        deadline = time.monotonic() + 120
        while not (run / "features" / "meta.json").is_file():
            assert time.monotonic() < deadline and all(s.poll() is None for s in shards), "no cache was created"
            time.sleep(0.1)
        # while they run (building VGG16, most likely, with nothing computed yet): other weights are refused
        foreign = run_features(run, "--shard", "1/2", "--seed", "1")
    finally:
        codes = [s.wait(timeout=400) for s in shards]
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], outputs
    assert foreign.returncode == 2 and "built with other settings" in foreign.stderr, foreign.stderr
    assert "seed=1" in foreign.stderr and "Traceback" not in foreign.stderr
    assert "features: shard 0/2: 3/3 batches of 2 to compute" in outputs[0]
    assert "features: shard 1/2: 2/2 batches of 2 to compute" in outputs[1]
    assert cache_files(run) == cache_files(one_process_run), "the same files, byte for byte"
    config, reference = (json.loads((r / "config.json").read_text())["features"] for r in (run, one_process_run))
    assert config | {"run": ""} == reference | {"run": ""}, "config.json records the same settings, no shard"


@pytest.mark.slow
def test_a_shard_killed_midway_reruns_into_the_same_cache(one_process_run, shard_root):
    run = prepared_flickr30k_run(shard_root, "killed", NUM_IMAGES)
    process = subprocess.Popen([sys.executable, "-m", "train", *features_args(run, "--shard", "0/2")], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not done_flags(run)[0::2].any():
            assert process.poll() is None, "shard 0/2 finished before it could be killed"
            assert time.monotonic() < deadline, "shard 0/2 flagged no batch in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGSTOP)  # frozen where it was seen: the kill lands inside the window
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
    killed = done_flags(run)
    computed = int(killed[0::2].sum())
    assert 1 <= computed < 3 and not killed[1::2].any(), killed
    assert json.loads((run / "features" / "meta.json").read_text())["complete"] is False

    rows, text = status(run)  # N from the record the shard left
    assert rows == {"0/2": f"{computed}/3", "1/2": "0/2", "all": f"{computed}/5"}, text
    assert "complete  no" in text

    rerun = run_features(run, "--shard", "0/2")
    assert rerun.returncode == 0, rerun.stderr
    assert f"shard 0/2: {3 - computed}/3 batches" in rerun.stderr, "only its missing batches are recomputed"
    assert "2/5 batches of the cache are left to other shards (1/2: 2)" in rerun.stderr
    rows, text = status(run, "--shards", "2")
    assert rows == {"0/2": "3/3", "1/2": "0/2", "all": "3/5"} and "complete  no" in text, text

    last = run_features(run, "--shard", "1/2")
    assert last.returncode == 0, last.stderr
    assert cache_files(run) == cache_files(one_process_run), "the same files, byte for byte"
    rows, text = status(run, "--shard", "1/2")
    assert rows == {"0/2": "3/3", "1/2": "2/2", "all": "5/5"} and "complete  yes" in text, text
    assert "random-he-normal:seed=0" in text
    rows, text = status(run)  # complete: the record is gone, so the whole cache
    assert rows == {"0/1": "5/5"} and "(the whole cache" in text, text


@pytest.mark.parametrize("extra, message", [
    (["--shard", "2/2"], "--shard '2/2': shards are counted from 0, so I must be 0 to 1 for N=2"),
    (["--shard", "a/b"], "--shard 'a/b': expected I/N"),
    (["--shard", "0/0"], "--shard '0/0': N, the number of shards, must be at least 1"),
    (["--shards", "2"], "--shards N goes with --status"),
    (["--status", "--shard", "3/2"], "--shard '3/2'"),
    (["--status", "--shard", "0/2", "--shards", "3"], "--shards 3"),
])
def test_bad_shard_options_are_refused_in_one_line(tmp_path, extra, message):
    """Before anything is read: no run folder is needed, and no VGG16 is built."""
    result = run_module("train", "features", "--run", str(tmp_path / "nowhere"), *extra)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "nowhere").exists()


def pixel_shard(run: Path, shard: str | None, **options):
    """Run the real extraction in process, with PixelEncoder for VGG16 (no TensorFlow)."""
    from train.config import FeaturesConfig
    from train.features import extract_features

    return extract_features(FeaturesConfig(run=run, vgg_weights="none", batch_size=BATCH, shard=shard, **options),
                            encoder=PixelEncoder())


def test_shards_in_turn_leave_the_one_process_files(tmp_path):
    """The write path without VGG16: shards in any order end in the files of one process, and only the last
    returns the cache."""
    one, sharded = (prepared_flickr30k_run(tmp_path, name, NUM_IMAGES) for name in ("one", "sharded"))
    assert pixel_shard(one, None) is not None
    assert pixel_shard(sharded, "1/3") is None and pixel_shard(sharded, "0/3") is None
    assert (sharded / "features" / "shards.json").is_file(), "N recorded for --status while partial"
    cache = pixel_shard(sharded, "2/3")
    assert cache is not None and cache.meta["complete"] is True
    assert cache_files(sharded) == cache_files(one)


def test_status_of_a_partial_cache_counts_per_shard(tmp_path):
    run = prepared_flickr30k_run(tmp_path, "run", NUM_IMAGES)
    missing = run_module("train", "features", "--run", str(run), "--status")
    assert missing.returncode == 2 and "no fc2 feature cache" in missing.stderr, missing.stderr
    assert "python -m train features --run" in missing.stderr and "Traceback" not in missing.stderr
    pixel_shard(run, "0/2")
    rows, text = status(run)
    assert rows == {"0/2": "3/3", "1/2": "0/2", "all": "3/5"}, text
    assert "complete  no: 3/5 batches done" in text and "random-he-normal:seed=0" in text
    assert "no process is extracting" in text
    rows, _ = status(run, "--shards", "3")  # batches 0, 3 | 1, 4 | 2 of which 0, 2, 4 are done
    assert rows == {"0/3": "1/2", "1/3": "1/2", "2/3": "1/1", "all": "3/5"}


def test_a_shard_with_other_settings_is_refused_on_a_partial_cache(tmp_path):
    run = prepared_flickr30k_run(tmp_path, "run", NUM_IMAGES)
    pixel_shard(run, "0/2")
    before = cache_files(run)
    result = run_features(run, "--shard", "1/2", "--seed", "1")
    assert result.returncode == 2, result.stderr
    assert "built with other settings" in result.stderr and "seed=1" in result.stderr
    assert "Traceback" not in result.stderr
    assert cache_files(run) == before, "the partial cache is kept as it was"


def test_a_cache_being_extracted_is_never_rebuilt_even_with_nothing_computed_yet(tmp_path):
    """A cache without a finished batch is normally rebuilt for other settings without --overwrite; not while
    another process is extracting into it (it may be building VGG16): it would lose that process's work."""
    from train.feature_shards import CacheLock

    run = prepared_flickr30k_run(tmp_path, "run", NUM_IMAGES)
    assert pixel_shard(run, "5/6") is None  # shard 5 of 6 owns none of the 5 batches: a cache, nothing computed
    with CacheLock(run / "features") as lock:
        lock.join()  # this test process now counts as extracting, as a running shard would
        busy = run_features(run, "--shard", "5/6", "--seed", "1")
        _, text = status(run)
        assert "yes, some process is extracting" in text
    assert busy.returncode == 2 and "Another process is extracting into it now" in busy.stderr, busy.stderr
    assert "seed=0" in json.loads((run / "features" / "meta.json").read_text())["weights"]
    alone = run_features(run, "--shard", "5/6", "--seed", "1")  # nobody extracting: started over for seed 1
    assert alone.returncode == 0, alone.stderr
    assert json.loads((run / "features" / "meta.json").read_text())["weights"] == "random-he-normal:seed=1"
