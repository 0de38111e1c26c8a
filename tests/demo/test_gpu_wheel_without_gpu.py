"""The real onnxruntime-gpu wheel where no GPU can be used: a GPU Space while it builds, a driver missing.

A fresh virtual environment gets `demo/requirements-gpu.txt` (onnxruntime-gpu with CUDA and cuDNN
from pip) and nothing else. There `--provider auto` must caption on the CPU, the same captions as the
CPU build gives, saying why in one line; `--provider cuda` must stop with one line naming what is
missing, for the caption CLI and the server alike. No traceback, no page of ONNX Runtime's log.

Slow: installs about 1.5 GB of wheels into the venv (a minute or two; pip's cache makes reruns quicker).
"""
import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port, split_images

# the venv: conftest `gpu_venv` (installed in the background from collection on; a download of gigabytes elsewhere)
pytestmark = pytest.mark.slow
ORT_LOG_MARKS = ("[E:onnxruntime", "[W:onnxruntime", "Traceback")


def in_venv(venv: Path, *args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-m", "demo", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home)})


def test_the_venv_has_the_gpu_build_alone(gpu_venv):
    listed = subprocess.run([str(gpu_venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, check=True).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert "onnxruntime-gpu" in names and "onnxruntime" not in names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx"}


def test_auto_captions_on_the_cpu_and_says_why_once(gpu_venv, exported_run, tmp_path):
    from demo.captioner import Captioner

    image = split_images(exported_run)[0]
    result = in_venv(gpu_venv, "caption", "--model", str(exported_run / "onnx"), str(image), str(image),
                     "--num-beams", "3", "--json", home=tmp_path)
    print(result.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout)
    assert output["provider"] == "cpu"  # this module's premise: the GPU wheel on a machine without a driver
    cpu_build = Captioner(exported_run / "onnx", provider="cpu").caption([image], num_beams=3)[0].caption
    assert [entry["caption"] for entry in output["images"]] == [cpu_build], "same release, same captions; a file " \
        "named twice is captioned once"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: ONNX Runtime runs on the CPU, not CUDA: "), lines
    assert lines[0].endswith("no NVIDIA driver (libcuda.so.1 not found): install the driver, or run on a machine "
                             "with a GPU"), "CUDA and cuDNN came with the extras: the driver alone is missing"
    assert not any(mark in result.stderr for mark in ORT_LOG_MARKS)


@pytest.mark.parametrize("command", ["caption", "serve"])
def test_cuda_stops_with_one_line_naming_what_is_missing(gpu_venv, exported_run, tmp_path, command):
    target = [str(split_images(exported_run)[0])] if command == "caption" else ["--port", str(free_port())]
    result = in_venv(gpu_venv, command, "--model", str(exported_run / "onnx"), "--provider", "cuda", *target,
                     home=tmp_path)
    print(result.stderr)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: provider 'cuda' cannot run here: "), lines
    assert "libcuda.so.1" in lines[0] and not any(mark in result.stderr for mark in ORT_LOG_MARKS)
