"""What the numbers were measured on: a ratio means little without the CPU and library versions."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

from export.tool_versions import tool_versions

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "fma")
PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "onnxruntime", "onnxruntime-gpu", "tf2onnx", "onnx",
            "numpy", "pillow", "gradio")


def machine_info() -> dict:
    cpu_model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name") and cpu_model == "unknown":
                    cpu_model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    versions = tool_versions(PACKAGES)
    return {
        "cpu": cpu_model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": [f for f in FLAGS_OF_INTEREST if f in flags],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "commit": source_commit(),
    }


def source_commit() -> str:
    """The checkout's commit, with '+changes' when its tracked files differ from it: which code the figures are
    of ('unknown' outside a git checkout)."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=repo).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def peak_rss_mib(pid: int | str = "self") -> float:
    """VmHWM of a process (this one by default): the most resident memory it has held, in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")
