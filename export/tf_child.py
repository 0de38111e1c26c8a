"""One TensorFlow step of the export (`export.tf_side`) in its own process, so its memory is returned before the
next starts and the caller never imports TensorFlow."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from export.errors import ExportError


def run_tf_child(part: str, run: Path, out: Path, opset: int, *extra: str) -> float:
    """Run `python -m export.tf_side PART`; return its peak RSS in GiB, or raise ExportError with its last lines."""
    command = [sys.executable, "-m", "export.tf_side", part, "--run", str(run), "--out", str(out),
               "--opset", str(opset), *extra]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ExportError(f"`{' '.join(command[1:4])}` failed (exit {result.returncode}): "
                          + "\n".join(result.stderr.strip().splitlines()[-5:]))
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_gib"])
