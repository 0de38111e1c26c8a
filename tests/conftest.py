"""Shared test settings: quiet TensorFlow, and the location of the real data shipped beside the repo."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.helpers import REPO as REPO
from tests.helpers import Drained, run_module, start_server

SHARED_FLICKR8K = REPO.parent / "shared" / "data" / "flickr8k"


@pytest.fixture
def shared_flickr8k() -> Path:
    if not (SHARED_FLICKR8K / "Flickr8k.token.txt").is_file():
        pytest.skip(f"real Flickr8k captions not found at {SHARED_FLICKR8K}")
    return SHARED_FLICKR8K


# While iterating on tests, CAPTIONER_TEST_RUNS=DIR keeps the session runs below in DIR across pytest
# invocations (built when missing, reused as they are otherwise; delete DIR after changing train/ or export/).
# CI never sets it: every run builds them afresh.
REUSED_RUNS = os.environ.get("CAPTIONER_TEST_RUNS")


def _session_run(tmp_path_factory, name: str) -> tuple[Path, bool]:
    """(where the run goes, whether it is already built there)."""
    if REUSED_RUNS:
        run = Path(REUSED_RUNS) / name
        return run, (run / ".built").is_file()
    return tmp_path_factory.mktemp(name) / "run", False


@pytest.fixture(scope="session")
def synthetic_features_run(tmp_path_factory) -> Path:
    """A prepared synthetic run (600 scenes) with its random-init VGG16 feature cache: ~1 minute, built once.

    Tests copy it before changing it.
    """
    import shutil

    run, built = _session_run(tmp_path_factory, "synthetic")
    if built:
        return run
    shutil.rmtree(run, ignore_errors=True)
    for args in (("prepare", "--dataset", "synthetic", "--num-images", "600", "--run", str(run)),
                 ("features", "--run", str(run), "--vgg-weights", "none")):
        result = run_module("train", *args)
        assert result.returncode == 0, result.stderr[-3000:]
    (run / ".built").touch()
    return run


@pytest.fixture(scope="session")
def exported_run(synthetic_features_run, tmp_path_factory) -> Path:
    """The 600-scene run trained for two epochs and exported with the int8 encoder (~2 minutes, once)."""
    import shutil

    run, built = _session_run(tmp_path_factory, "export")
    if built:
        return run
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(synthetic_features_run, run, ignore=shutil.ignore_patterns(".built"))
    fit = run_module("train", "fit", "--run", str(run), "--epochs", "2")
    assert fit.returncode == 0, fit.stderr[-3000:]
    result = run_module("export", "--run", str(run), "--quantize", "int8")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run / ".built").touch()
    return run


@pytest.fixture(scope="session")
def int8_decoder_run(exported_run, tmp_path_factory) -> Path:
    """A run folder whose onnx/ is the exported bundle with the int8 decoder step in it (seconds: see
    helpers.with_int8_decoder), whatever this run's int8 decoder measured at export."""
    from tests.helpers import with_int8_decoder

    run = tmp_path_factory.mktemp("int8-decoder")
    with_int8_decoder(exported_run / "onnx", run / "onnx")
    return run


@pytest.fixture(scope="session")
def captioner(exported_run):
    """The exported bundle's Captioner with the defaults a user gets (provider auto, fp32)."""
    from demo.captioner import Captioner

    return Captioner(exported_run / "onnx")


@pytest.fixture(scope="session")
def served_app(exported_run):
    """The demo app serving the exported synthetic bundle on loopback; its output is drained so it never stalls."""
    process, url = start_server(exported_run / "onnx")
    output = Drained(process)
    yield url
    output.stop()
