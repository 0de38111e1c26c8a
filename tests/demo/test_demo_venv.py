"""The deployable unit alone: a fresh virtual environment with only demo/requirements.txt captions images.

Slow: creates a venv and installs the runtime's packages (from pip's cache when warm).
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

# pip installs the demo requirements into a fresh venv (offline from the cache here: about a minute)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def test_fresh_venv_with_only_demo_requirements(exported_run, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REPO / "demo" / "requirements.txt")],
                             capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx"}, "the runtime must not pull TensorFlow"
    captions = json.loads((exported_run / "captions.json").read_text())
    image = Path(captions["image_root"]) / captions["images"][0]["id"]
    result = subprocess.run([str(python), "-m", "demo", "caption", "--model", str(exported_run / "onnx"), str(image),
                             "--num-beams", "3", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={"PATH": str(venv / "bin"), "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["images"][0]["caption"]
