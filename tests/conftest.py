"""Shared test settings: quiet TensorFlow, and the location of the real data shipped beside the repo."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_FLICKR8K = REPO.parent / "shared" / "data" / "flickr8k"


@pytest.fixture
def shared_flickr8k() -> Path:
    if not (SHARED_FLICKR8K / "Flickr8k.token.txt").is_file():
        pytest.skip(f"real Flickr8k captions not found at {SHARED_FLICKR8K}")
    return SHARED_FLICKR8K


def run_module(module: str, *args: str, timeout: int = 540, env: dict | None = None):
    """Run `python -m module args` from the repo root, as a user would."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


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


def caption_differences(captioner, images: list, reference: list[str], got: list[str], num_beams: int) -> list[int]:
    """Indices of `images` whose caption in `got` differs from `reference` by more than a near-tie of the
    captioner's own decoder (export.parity): which images have near-ties depends on the weights, so the CPU."""
    import numpy as np

    from demo.preprocess import load_image
    from export.parity import compare_captions

    def tokens(captions: list[str]) -> list[list[int]]:
        return [captioner.vocab.encode(caption.split(), add_special=False) for caption in captions]

    features, _ = captioner.encode(np.stack([load_image(image) for image in images]))
    return compare_captions(captioner.decoder, features, captioner.vocab, num_beams, tokens(reference),
                            got=tokens(got))["different"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(bundle: Path, *extra: str):
    """`python -m demo serve` in a subprocess on a free loopback port; returns (process, url) once it answers."""
    import sys

    port = free_port()
    command = [sys.executable, "-m", "demo", "serve", "--model", str(bundle), "--port", str(port), *extra]
    return wait_for_server(command, f"http://127.0.0.1:{port}/")


def wait_for_server(command: list[str], url: str, cwd: Path = REPO, env: dict | None = None):
    """Start `command` and wait (120 s at most) until `url` answers; returns (process, url)."""
    import subprocess
    import time
    import urllib.request

    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError(f"{url} did not answer within 120 s")


@pytest.fixture(scope="session")
def served_app(exported_run):
    """The demo app serving the exported synthetic bundle on loopback; its output is drained so it never stalls."""
    import threading

    process, url = start_server(exported_run / "onnx")
    threading.Thread(target=process.stdout.read, daemon=True).start()  # a full pipe would block the server
    yield url
    process.terminate()
    process.wait(timeout=30)
