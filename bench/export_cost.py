"""Export wall time and peak memory, whole process tree, as `/usr/bin/time -v` reports them.

Runs `python -m export --quantize int8` on a copy of the run (so the run's own
bundle is untouched). GNU time's "Maximum resident set size" is the largest
single process of the tree: export's stages run one at a time in separate
processes, so that is the peak the machine must provide.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from demo import bundle_layout as layout
from demo.artifacts import read_json
from export.conv_cache import CACHE_DIR
from train.run_files import RunFiles

TARGETS = {"peak_rss_gib_at_most": 6.0, "peak_rss_gib_aim": 4.0, "seconds_at_most": 120.0, "seconds_aim": 60.0}


def measure(run: Path, quantize: str = "int8") -> dict:
    if not RunFiles(run).model.is_file():
        return {"name": "export", "skipped": f"no trained model in {run}"}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        copy = Path(tmp) / "run"
        skipped = (layout.BUNDLE_DIR, f"{layout.BUNDLE_DIR}.previous", ".onnx-tmp-*", "checkpoints", "logs",
                   "synthetic", CACHE_DIR)  # without the cached conversion: a first export's cost
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns(*skipped))
        command = ["/usr/bin/time", "-v", sys.executable, "-m", "export", "--run", str(copy), "--quantize", quantize]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            return {"name": "export", "failed": result.stderr[-2000:]}
        manifest = read_json(RunFiles(copy).bundle / layout.MANIFEST, "manifest")
    peak_gib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1)) / 2**20
    wall = _wall_seconds(re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", result.stderr)[1])
    return {
        "name": "export",
        "quantize": quantize,
        "seconds": wall,
        "peak_rss_gib": peak_gib,
        "stage_peak_rss_gib": manifest["export_peak_rss_gib"],
        "targets": TARGETS,
        "met": {"peak_rss": peak_gib <= TARGETS["peak_rss_gib_at_most"], "seconds": wall <= TARGETS["seconds_at_most"],
                "peak_rss_aim": peak_gib <= TARGETS["peak_rss_gib_aim"], "seconds_aim": wall <= TARGETS["seconds_aim"]},
    }


def _wall_seconds(text: str) -> float:
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds
