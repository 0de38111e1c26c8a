"""The VGG16 fc2 feature cache: correct rows, resumable after SIGKILL, refuses foreign caches.

Tests of the features themselves run the real VGG16 (seeded random init; ImageNet weights cannot be
downloaded here) in subprocesses, as a user would, so they are marked slow. Tests of what the cache
refuses need a complete cache but not its values: they use one written by the real cache code with
`PixelEncoder` standing in for VGG16, and stay fast.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from demo.preprocess import PREPROCESS_VERSION
from tests.fixtures_datasets import prepared_flickr30k_run, stand_in_feature_cache
from tests.helpers import REPO, run_module

NUM_IMAGES = 10
BATCH = 2


def features_args(run: Path, *extra: str) -> list[str]:
    """`python -m train features` arguments for a small seeded random-init cache."""
    return ["features", "--run", str(run), "--vgg-weights", "none", "--batch-size", str(BATCH), *extra]


def run_features(run: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_module("train", *features_args(run, *extra), env=env)


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("features")
    run = prepared_flickr30k_run(root, "uninterrupted", NUM_IMAGES)
    result = run_features(run)
    assert result.returncode == 0, result.stderr
    return run


@pytest.fixture(scope="module")
def stand_in_run(tmp_path_factory) -> Path:
    """A prepared run with a complete cache (meta of `--vgg-weights none`), written without VGG16. Copy to change."""
    return stand_in_feature_cache(prepared_flickr30k_run(tmp_path_factory.mktemp("stand_in"), "run", NUM_IMAGES),
                                  batch_size=BATCH)


@pytest.mark.slow
def test_cache_rows_are_the_encoder_features_of_each_image(complete_run):
    from demo.preprocess import load_image
    from train.encoder import EncoderSpec, build_encoder
    from train.feature_cache import load_cache
    from train.run_files import RunFiles

    cache = load_cache(RunFiles(complete_run), EncoderSpec("none", 0))
    assert cache.features.shape == (NUM_IMAGES, 4096) and cache.features.dtype == np.float16
    meta = json.loads((complete_run / "features" / "meta.json").read_text())
    assert meta["complete"] and meta["weights"] == "random-he-normal:seed=0"
    captions = json.loads((complete_run / "captions.json").read_text())
    root = Path(captions["image_root"])
    ids = [captions["images"][k]["id"] for k in (0, 7)]
    pixels = np.stack([load_image(root / i) for i in ids]).astype(np.float32)
    direct = build_encoder(EncoderSpec("none", 0)).predict_on_batch(pixels)
    cached = cache.lookup(ids)
    np.testing.assert_allclose(cached, direct, rtol=2e-3, atol=2e-3 * np.abs(direct).max())
    assert not np.allclose(cached[0], cached[1]), "different images must give different features"


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_same_cache(complete_run):
    run = prepared_flickr30k_run(complete_run.parent, "killed", NUM_IMAGES)
    process = subprocess.Popen([sys.executable, "-m", "train", *features_args(run)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_file = run / "features" / "done.npy"

    def batches_done() -> np.ndarray:
        try:
            return np.load(done_file, allow_pickle=False)
        except (ValueError, OSError, EOFError):  # not written yet, or being replaced
            return np.zeros(1, bool)

    deadline = time.monotonic() + 300
    try:
        while not 1 <= batches_done().sum() < len(batches_done()) - 1:
            assert process.poll() is None, "extraction finished before it could be interrupted"
            assert time.monotonic() < deadline, "no batch was flagged done within 300 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGSTOP)  # frozen where it was seen: the kill lands inside the window
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
    meta = json.loads((run / "features" / "meta.json").read_text())
    assert meta["complete"] is False
    done_before = np.load(done_file, allow_pickle=False)
    assert 0 < done_before.sum() < len(done_before)

    result = run_features(run)
    assert result.returncode == 0, result.stderr
    remaining = len(done_before) - int(done_before.sum())
    assert f"{remaining}/{len(done_before)} batches" in result.stderr, "only the missing batches are recomputed"
    resumed = np.load(run / "features" / "fc2.npy", allow_pickle=False)
    reference = np.load(complete_run / "features" / "fc2.npy", allow_pickle=False)
    assert np.array_equal(resumed, reference)


@pytest.mark.slow
def test_second_run_computes_nothing(complete_run):
    before = (complete_run / "features" / "fc2.npy").stat().st_mtime_ns
    result = run_features(complete_run)
    assert result.returncode == 0, result.stderr
    assert "batches" not in result.stderr
    assert (complete_run / "features" / "fc2.npy").stat().st_mtime_ns == before


def test_cache_built_with_other_weights_is_refused(stand_in_run):
    result = run_features(stand_in_run, "--seed", "1")
    assert result.returncode == 2
    assert "built with other settings" in result.stderr and "seed=1" in result.stderr
    assert "--overwrite" in result.stderr and "Traceback" not in result.stderr


OLD_PREPROCESS = "rgb224-center-crop-v0"  # any other version than demo.preprocess.PREPROCESS_VERSION


def with_other_preprocessing(source: Path, run: Path) -> Path:
    """A copy of `source` whose cache's meta.json records another preprocessing version."""
    shutil.copytree(source, run)
    meta_file = run / "features" / "meta.json"
    meta_file.write_text(json.dumps(json.loads(meta_file.read_text()) | {"preprocess": OLD_PREPROCESS}))
    return run


def test_cache_of_another_preprocessing_version_is_refused(stand_in_run, tmp_path):
    """README: a cache built with other preprocessing is refused, naming both versions and `--overwrite`."""
    from train.encoder import EncoderSpec
    from train.feature_cache import CacheMismatch, load_cache
    from train.run_files import RunFiles

    run = with_other_preprocessing(stand_in_run, tmp_path / "run")
    before = {name: (run / "features" / name).read_bytes() for name in ("fc2.npy", "meta.json", "done.npy")}
    result = run_features(run)
    assert result.returncode == 2, result.stderr
    assert "built with other settings" in result.stderr
    assert f"preprocess: cache has {OLD_PREPROCESS!r}, requested {PREPROCESS_VERSION!r}" in result.stderr
    assert "Pass --overwrite to rebuild it" in result.stderr and "Traceback" not in result.stderr
    assert {name: (run / "features" / name).read_bytes() for name in before} == before, "a refused cache is kept"
    # `fit` and `export` open the cache with load_cache: the same refusal
    with pytest.raises(CacheMismatch, match=f"preprocess: cache has {OLD_PREPROCESS!r}") as info:
        load_cache(RunFiles(run), EncoderSpec("none", 0))
    assert "python -m train features --overwrite" in str(info.value)


@pytest.mark.slow
def test_overwrite_rebuilds_a_cache_of_another_preprocessing_version(complete_run, tmp_path):
    """`python -m train features --overwrite` replaces the refused cache with the one a fresh run makes."""
    run = with_other_preprocessing(complete_run, tmp_path / "run")
    stale = np.lib.format.open_memmap(run / "features" / "fc2.npy", mode="r+")
    stale[:] = 0  # the old cache's values: every row must be recomputed, none kept
    stale.flush()
    del stale
    result = run_features(run, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert f"{NUM_IMAGES // BATCH}/{NUM_IMAGES // BATCH} batches" in result.stderr, "the whole cache is recomputed"
    meta = json.loads((run / "features" / "meta.json").read_text())
    assert meta["preprocess"] == PREPROCESS_VERSION and meta["complete"] is True
    rebuilt = np.load(run / "features" / "fc2.npy", allow_pickle=False)
    assert np.array_equal(rebuilt, np.load(complete_run / "features" / "fc2.npy", allow_pickle=False))
    assert run_features(run).returncode == 0, "the rebuilt cache is accepted without --overwrite"


def test_cache_of_a_re_prepared_run_is_refused(stand_in_run, tmp_path):
    from train.encoder import EncoderSpec
    from train.feature_cache import CacheMismatch, load_cache
    from train.run_files import RunFiles

    run = tmp_path / "copy"
    shutil.copytree(stand_in_run, run)
    captions = json.loads((run / "captions.json").read_text())
    captions["images"] = captions["images"][:-1]
    (run / "captions.json").write_text(json.dumps(captions))
    with pytest.raises(CacheMismatch, match="other images"):
        load_cache(RunFiles(run), EncoderSpec("none", 0))


@pytest.mark.slow
def test_missing_imagenet_weights_name_every_offline_option(complete_run, tmp_path):
    """Offline (forced with a dead proxy, so this holds on a networked machine too): no silent fallback."""
    env = os.environ | {"KERAS_HOME": str(tmp_path / "keras"), "HTTPS_PROXY": "http://127.0.0.1:9",
                        "https_proxy": "http://127.0.0.1:9"}
    run = tmp_path / "run"
    shutil.copytree(complete_run, run, ignore=shutil.ignore_patterns("features"))
    result = run_module("train", "features", "--run", str(run), env=env)
    assert result.returncode == 2
    for option in ("--vgg-weights PATH", "--vgg-weights calibrated", "--vgg-weights none"):
        assert option in result.stderr
    assert "Traceback" not in result.stderr
    fallback = run_features(run)  # the advice works as given: no --overwrite needed
    assert fallback.returncode == 0, fallback.stderr


@pytest.mark.parametrize("weights, message", [
    ("missing.h5", "no such file"),
    pytest.param("corrupt.h5", "cannot load", marks=pytest.mark.slow),  # found out after building VGG16
])
def test_bad_local_weights_file_is_a_clear_error(stand_in_run, tmp_path, weights, message):
    (tmp_path / "corrupt.h5").write_bytes(b"not hdf5")
    run = tmp_path / "run"
    shutil.copytree(stand_in_run, run, ignore=shutil.ignore_patterns("features"))
    result = run_module("train", "features", "--run", str(run), "--vgg-weights", str(tmp_path / weights))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_features_before_prepare_says_what_to_run(tmp_path):
    result = run_module("train", "features", "--run", str(tmp_path / "empty"))
    assert result.returncode == 2 and "python -m train prepare" in result.stderr
