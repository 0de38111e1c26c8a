"""The VGG16 fc2 feature cache: correct rows, resumable after SIGKILL, refuses foreign caches.

These run the real VGG16 (seeded random init; ImageNet weights cannot be
downloaded here) in subprocesses, as a user would, so they are marked slow.
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
from PIL import Image

from tests.conftest import REPO
from tests.fixtures_datasets import flickr30k_rows, make_flickr30k
from train.config import PrepareConfig
from train.prepare import run_prepare

NUM_IMAGES = 10
BATCH = 2


def features_cmd(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "train", "features", "--run", str(run), "--vgg-weights", "none",
            "--batch-size", str(BATCH), *extra]


def run_features(run: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(features_cmd(run, *extra), cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=env)


def prepared_run(root: Path, name: str) -> Path:
    """A flickr30k-layout fixture of distinct images (colour bands), prepared into run `name`."""
    rows = []
    for i in range(NUM_IMAGES):
        rows += flickr30k_rows(f"{i}.jpg", [f"picture number {i}"])
    data = root / "data"
    if not data.exists():
        make_flickr30k(data, rows)
        rng = np.random.default_rng(0)
        for i in range(NUM_IMAGES):
            pixels = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(data / "flickr30k_images" / f"{i}.jpg", quality=95)
    run = root / name
    run_prepare(PrepareConfig(run=run, dataset="flickr30k", data_dir=data, min_count=1))
    return run


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("features")
    run = prepared_run(root, "uninterrupted")
    result = run_features(run)
    assert result.returncode == 0, result.stderr
    return run


@pytest.mark.slow
def test_cache_rows_are_the_encoder_features_of_each_image(complete_run):
    from demo.preprocess import load_image
    from train.encoder import EncoderSpec, build_encoder
    from train.features import load_cache
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
    run = prepared_run(complete_run.parent, "killed")
    process = subprocess.Popen(features_cmd(run), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_file = run / "features" / "done.npy"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if done_file.is_file():
                try:
                    done = np.load(done_file, allow_pickle=False)
                except (ValueError, OSError, EOFError):
                    done = np.zeros(1, bool)
                if 1 <= done.sum() < len(done) - 1:
                    break
            assert process.poll() is None, "extraction finished before it could be interrupted"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
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


def test_cache_built_with_other_weights_is_refused(complete_run):
    result = run_features(complete_run, "--seed", "1")
    assert result.returncode == 2
    assert "built with other settings" in result.stderr and "seed=1" in result.stderr
    assert "--overwrite" in result.stderr and "Traceback" not in result.stderr


def test_cache_of_a_re_prepared_run_is_refused(complete_run, tmp_path):
    from train.encoder import EncoderSpec
    from train.features import CacheMismatch, load_cache
    from train.run_files import RunFiles

    run = tmp_path / "copy"
    shutil.copytree(complete_run, run)
    captions = json.loads((run / "captions.json").read_text())
    captions["images"] = captions["images"][:-1]
    (run / "captions.json").write_text(json.dumps(captions))
    with pytest.raises(CacheMismatch, match="other images"):
        load_cache(RunFiles(run), EncoderSpec("none", 0))


@pytest.mark.slow
def test_missing_imagenet_weights_name_both_offline_options(complete_run, tmp_path):
    """Offline (forced with a dead proxy, so this holds on a networked machine too): no silent fallback."""
    env = os.environ | {"KERAS_HOME": str(tmp_path / "keras"), "HTTPS_PROXY": "http://127.0.0.1:9",
                        "https_proxy": "http://127.0.0.1:9"}
    run = tmp_path / "run"
    shutil.copytree(complete_run, run, ignore=shutil.ignore_patterns("features"))
    result = subprocess.run([sys.executable, "-m", "train", "features", "--run", str(run)], cwd=REPO,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert "--vgg-weights PATH" in result.stderr and "--vgg-weights none" in result.stderr
    assert "Traceback" not in result.stderr
    fallback = run_features(run)  # the advice works as given: no --overwrite needed
    assert fallback.returncode == 0, fallback.stderr


@pytest.mark.parametrize("weights, message", [("missing.h5", "no such file"), ("corrupt.h5", "cannot load")])
def test_bad_local_weights_file_is_a_clear_error(complete_run, tmp_path, weights, message):
    (tmp_path / "corrupt.h5").write_bytes(b"not hdf5")
    run = tmp_path / "run"
    shutil.copytree(complete_run, run, ignore=shutil.ignore_patterns("features"))
    result = subprocess.run([sys.executable, "-m", "train", "features", "--run", str(run),
                             "--vgg-weights", str(tmp_path / weights)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_features_before_prepare_says_what_to_run(tmp_path):
    result = subprocess.run([sys.executable, "-m", "train", "features", "--run", str(tmp_path / "empty")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "python -m train prepare" in result.stderr
