"""The README's main command, run verbatim: `make demo` builds a (small) default model and serves it.

Slow: a whole pipeline, export included. `NUM_IMAGES`, `EPOCHS`, `RUN` and `PORT` are the variables
the README documents; they keep it small and out of the way of the real `models/default`.
"""
import os
import re
import subprocess
import threading
import time
import urllib.request

import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow


def readme_block(heading: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_make_demo_from_the_readme_builds_and_serves(tmp_path):
    commands = readme_block("Two commands")
    assert commands == ["make demo", "make test"]  # make test is what is running this test
    port = free_port()
    env = os.environ | {"NUM_IMAGES": "120", "EPOCHS": "2", "RUN": str(tmp_path / "run"), "PORT": str(port)}
    process = subprocess.Popen(commands[0].split(), cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 900
        while True:
            assert process.poll() is None, "".join(lines)[-4000:]
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "make demo did not serve in 15 minutes"
                time.sleep(1)
        from gradio_client import Client, handle_file

        example = sorted((REPO / "demo" / "examples").glob("*.png"))[0]
        result = Client(url, verbose=False).predict(handle_file(str(example)), 3, 20, 0.5, 3, "fp32",
                                                    api_name="/caption")
        # two epochs on 120 scenes teach little: check the served answer's shape, not its wording
        assert isinstance(result["greedy"]["caption"], str) and len(result["beam"]["candidates"]) == 3
        assert result["provider"] == "cpu" and result["encoder_ms"] > 0
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=60)
    output = "".join(lines)
    for stage in ("prepare", "features", "fit", "evaluate", "export"):
        assert f"[{stage}]" in output, output[-4000:]
    assert "BLEU-4" in output and (tmp_path / "run" / "onnx" / "manifest.json").is_file()
