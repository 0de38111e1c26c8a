"""The deployable unit alone: a fresh virtual environment with only demo/requirements.txt captions images.

Slow: a venv with the runtime's packages (conftest `demo_venv`, installed in the background from collection on).
"""
import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow


def test_fresh_venv_with_only_demo_requirements(demo_venv, exported_run, tmp_path):
    venv = demo_venv
    python = venv / "bin" / "python"
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
