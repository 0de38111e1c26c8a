"""`python -m export.space`: the folder is a complete Space that serves captions on its own.

Slow: uses the session's exported run and starts the Space's app.py.
"""
import os
import sys

import pytest

from tests.conftest import REPO, free_port, run_module, wait_for_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def space(exported_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("space") / "space"
    result = run_module("export.space", "--run", str(exported_run), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_space_folder_has_everything_and_no_tensorflow(space):
    assert {p.name for p in space.iterdir()} >= {"app.py", "requirements.txt", "README.md", ".gitattributes", "demo",
                                                  "onnx"}
    lines = (space / "requirements.txt").read_text().lower().splitlines()
    requirements = "\n".join(line for line in lines if not line.startswith("#"))
    assert "onnxruntime" in requirements and "gradio" in requirements
    assert "tensorflow" not in requirements and "keras" not in requirements and "tf2onnx" not in requirements
    front = (space / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
    assert "*.onnx filter=lfs" in (space / ".gitattributes").read_text()
    assert (space / "app.py").read_bytes() == (REPO / "demo" / "app.py").read_bytes(), "one entry point, not two"
    shipped = {p.name for p in (space / "onnx").iterdir()}
    assert "encoder.int8.onnx" in shipped and "encoder.onnx" not in shipped, "int8 by default, to keep it light"
    from demo.manifest import verify_bundle

    assert set(verify_bundle(space / "onnx")["files"]) == shipped - {"manifest.json"}


def test_space_app_serves_captions_from_its_own_folder(space, tmp_path):
    from gradio_client import Client, handle_file

    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CAPTIONER_PORT": str(port),
           "CAPTIONER_HOST": "127.0.0.1"}
    process, url = wait_for_server([sys.executable, "app.py"], f"http://127.0.0.1:{port}/", cwd=space, env=env)
    try:
        example = sorted((space / "demo" / "examples").glob("*.png"))[0]
        result = Client(url, verbose=False).predict(handle_file(str(example)), 3, 20, 0.5, 2, "int8",
                                                    api_name="/caption")
        from demo.captioner import Captioner

        here = Captioner(space / "onnx", variant="int8", provider="cpu")
        assert result["variant"] == "int8" and len(result["beam"]["candidates"]) == 2
        assert result["greedy"]["caption"] == here.caption([example], max_length=20)[0].caption
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_gpu_space_ships_the_cuda_runtime(exported_run, tmp_path):
    from tests.conftest import REPO

    result = run_module("export.space", "--run", str(exported_run), "--out", str(tmp_path / "gpu"), "--gpu")
    assert result.returncode == 0, result.stderr[-2000:]
    shipped = (tmp_path / "gpu" / "requirements.txt").read_text()
    assert shipped == (REPO / "demo" / "requirements-gpu.txt").read_text() and "onnxruntime-gpu" in shipped
    assert "suggested_hardware:" in (tmp_path / "gpu" / "README.md").read_text().split("---")[1]
    assert not list((tmp_path / "gpu" / "demo").glob("requirements*.txt")), "one requirements file, at the top"


def test_space_into_a_non_empty_folder_is_refused(exported_run, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = run_module("export.space", "--run", str(exported_run), "--out", str(tmp_path))
    assert result.returncode == 2 and "not empty" in result.stderr and (tmp_path / "keep.txt").read_text() == "mine"
