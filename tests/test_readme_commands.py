"""The README's main command, run verbatim: `make demo` builds a (small) default model and serves it, and a
second `make demo` reuses every stage and serves again ("reuses everything and serves within seconds").

Slow: a whole pipeline, export included. `NUM_IMAGES`, `EPOCHS`, `RUN` and `PORT` are the variables
the README documents; they keep it small and out of the way of the real `models/default`.
"""
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import REPO, Drained, ask_caption, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
STAGES = ("prepare", "features", "fit", "evaluate", "export")


def readme_block(heading: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def make_demo_until_it_serves(command: str, run: Path, within_s: int) -> tuple[str, dict]:
    """Run `command` until its page answers; ask the API once; stop it. Returns (its output, the answer)."""
    port = free_port()
    env = os.environ | {"NUM_IMAGES": "120", "EPOCHS": "2", "RUN": str(run), "PORT": str(port)}
    process = subprocess.Popen(command.split(), cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = Drained(process)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + within_s
        while True:
            assert process.poll() is None, output.text()[-4000:]
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, f"{command} did not serve within {within_s} s"
                time.sleep(1)
        answer = ask_caption(url, sorted((REPO / "demo" / "examples").glob("*.png"))[0])
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=60)
    return output.text(), answer


def test_make_demo_from_the_readme_builds_and_serves_then_reuses_everything(tmp_path):
    commands = readme_block("Two commands")
    assert commands == ["make demo", "make test"]  # make test is what is running this test
    run = tmp_path / "run"
    output, answer = make_demo_until_it_serves(commands[0], run, within_s=600)
    # two epochs on 120 scenes teach little: check the served answer's shape, not its wording
    assert isinstance(answer["greedy"]["caption"], str) and len(answer["beam"]["candidates"]) == 3
    assert answer["provider"] in ("cpu", "cuda") and answer["encoder_ms"] > 0
    for stage in STAGES:
        assert f"[{stage}]" in output and f"[{stage}] already done" not in output, output[-4000:]
    assert "BLEU-4" in output and (run / "onnx" / "manifest.json").is_file()

    built = {path: path.stat().st_mtime_ns for path in run.rglob("*") if path.is_file()}
    output, again = make_demo_until_it_serves(commands[0], run, within_s=120)
    for stage in STAGES:
        assert f"[{stage}] already done, reusing it" in output, output[-4000:]
    assert {path: path.stat().st_mtime_ns for path in built} == built, "the second run rewrote a file"
    for search in ("greedy", "beam"):  # the same bundle serves the same captions (timings aside)
        assert again[search]["candidates"] == answer[search]["candidates"]
