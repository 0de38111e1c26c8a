"""The README's main command, run verbatim: `make demo` builds a (small) default model and serves it, and a
second `make demo` reuses every stage and serves again ("reuses everything and serves within seconds").

The first `make demo` is the suite's shared build (conftest `demo_build`): this test checks what it printed and
answered, then times only the second. Slow: a second pipeline start and a server. `NUM_IMAGES`, `EPOCHS`, `RUN`
and `PORT` are the variables the README documents; they keep it small and out of the way of `models/default`.
"""
from pathlib import Path

import pytest

from tests.conftest import DEMO_SETTINGS
from tests.helpers import free_port, offline_env, readme_block, serve_once

pytestmark = pytest.mark.slow
STAGES = ("prepare", "features", "fit", "evaluate", "export")


def test_make_demo_from_the_readme_builds_and_serves_then_reuses_everything(demo_build):
    commands = readme_block("Quick start")
    assert commands == ["make demo", "make test"]  # make test is what is running this test
    run, output, answer = demo_build.run, demo_build.output, demo_build.answer
    # two epochs on 600 scenes teach little: check the served answer's shape, not its wording
    assert isinstance(answer["greedy"]["caption"], str) and len(answer["beam"]["candidates"]) == 3
    assert answer["provider"] in ("cpu", "cuda") and answer["encoder_ms"] > 0
    for stage in STAGES:
        assert f"[{stage}]" in output and f"[{stage}] already done" not in output, output[-4000:]
    assert "ImageNet weights cannot be downloaded" in output, "offline, the build says which encoder it uses"
    assert "BLEU-4" in output and (run / "onnx" / "manifest.json").is_file()

    built = {path: path.stat().st_mtime_ns for path in Path(run).rglob("*") if path.is_file()}
    port = free_port()
    again_output, again = serve_once(commands[0], offline_env(**DEMO_SETTINGS, RUN=str(run), PORT=str(port)), port,
                                     within_s=120)
    for stage in STAGES:
        assert f"[{stage}] already done, reusing it" in again_output, again_output[-4000:]
    assert {path: path.stat().st_mtime_ns for path in built} == built, "the second run rewrote a file"
    for search in ("greedy", "beam"):  # the same bundle serves the same captions (timings aside)
        assert again[search]["candidates"] == answer[search]["candidates"]
