"""`python -m demo caption ... --engine ray`: the one-process command's rows from a Ray Data job, resumable.

Every Ray process these tests start is a local cluster the command starts itself, bound to 127.0.0.1
(`demo.ray_captioning._connect`: `_node_ip_address`, no dashboard); the command logs the addresses of the
cluster's nodes, and the test checks that 127.0.0.1 is the only one. Nothing here sends traffic elsewhere.

Slow: Ray's start-up (seconds) and two jobs, one of them killed.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, offline_env, split_images

pytestmark = pytest.mark.slow
try:
    import ray  # noqa: F401  (only whether it is there)
except ImportError:  # requirements.txt installs it; CI must not pass by skipping
    if os.environ.get("CI"):
        raise
    pytest.skip("Ray is not installed: pip install -r requirements/ray.txt (make venv does)", allow_module_level=True)
COPIES = 4  # the test images, each copied under several names: enough batches for a kill to land in the middle


def caption(bundle: Path, images: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "demo", "caption", str(images), "--model", str(bundle),
                             "--variant", "int8", "--out", str(out), *extra], cwd=REPO, env=offline_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def rows(out: Path) -> dict[str, dict]:
    """The file's rows by path, without timings (the one thing that may differ between runs)."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k != "timings_ms"}
        return [plain(v) for v in value] if isinstance(value, list) else value
    lines = out.read_text().splitlines()
    found = [json.loads(line) for line in lines]
    assert len({row["path"] for row in found}) == len(found), "an image written twice"
    return {row["path"]: plain(row) for row in found}


@pytest.fixture(scope="module")
def folder(exported_run, tmp_path_factory) -> Path:
    """Test images under several names each, and one file that is not an image."""
    folder = tmp_path_factory.mktemp("ray-images")
    for image in split_images(exported_run, count=8):
        for copy in range(COPIES):
            shutil.copyfile(image, folder / f"{image.stem}-{copy}{image.suffix}")
    (folder / "broken.png").write_bytes(b"not a png at all")
    return folder


def test_a_ray_job_writes_the_one_process_rows_on_loopback(exported_run, folder, tmp_path):
    """Same rows (captions, log-probabilities, candidates, the bad file's error row) as the one-process command;
    exit 1 for the refused file in both; the nodes on 127.0.0.1 only. (A rerun skipping what is done: the next
    test, after a kill.)"""
    bundle = exported_run / "onnx"
    local, ray = caption(bundle, folder, tmp_path / "local.jsonl"), caption(bundle, folder, tmp_path / "ray.jsonl",
                                                                            "--engine", "ray")
    local.communicate(timeout=540)
    ray_out = ray.communicate(timeout=540)
    assert (local.returncode, ray.returncode) == (1, 1), ray_out[1][-3000:]
    assert "node address(es) 127.0.0.1," in ray_out[1], "the local cluster listens on loopback only"
    expected, got = rows(tmp_path / "local.jsonl"), rows(tmp_path / "ray.jsonl")
    assert got == expected
    assert "error" in got[str(folder / "broken.png")] and len(got) == 8 * COPIES + 1


def test_a_job_killed_half_way_and_rerun_has_every_image_once(exported_run, folder, tmp_path):
    """The driver SIGKILLed once some rows are in the file (the kill must land mid-job: the test fails if the
    job was already done), then the same command: every image once, as the one-process command writes it."""
    bundle, out = exported_run / "onnx", tmp_path / "killed.jsonl"
    job = caption(bundle, folder, out, "--engine", "ray", "--batch-size", "4")
    deadline = time.monotonic() + 300
    while not (out.is_file() and out.read_text().count("\n") >= 4):
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before any row could be seen"
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and what it started in its session
    job.wait(timeout=30)
    written = out.read_text().count("\n")
    assert written < 8 * COPIES + 1, "the kill came after the job was done: nothing was interrupted"
    rerun = caption(bundle, folder, out, "--engine", "ray")
    _, err = rerun.communicate(timeout=540)
    assert rerun.returncode == 1, err[-2000:]
    reference = caption(bundle, folder, tmp_path / "reference.jsonl")
    reference.communicate(timeout=540)
    assert rows(out) == rows(tmp_path / "reference.jsonl"), f"after a kill at {written} rows"
