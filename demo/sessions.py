"""ONNX Runtime sessions with an explicit, reported execution provider.

`auto` uses CUDA when the CUDA provider is installed *and* a session on it
actually starts (a missing CUDA library makes ORT fall back silently; we check
which provider the session really got), else the CPU. `cuda` insists and
fails with a message that says how to get it. Threads default to the cores
this process may use, which is what ORT's own default misjudges in containers.
"""
from __future__ import annotations

import os
from pathlib import Path

PROVIDERS = ("auto", "cuda", "cpu")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ProviderError(RuntimeError):
    """The requested execution provider cannot be used here."""


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def create_session(path: Path, provider: str = "auto", threads: int | None = None):
    """Return (session, provider name actually in use)."""
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, not {provider!r}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or usable_cores()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    if provider == "cuda" and CUDA not in available:
        raise ProviderError(
            "the CUDA provider is not available in this ONNX Runtime (installed: "
            f"{', '.join(available)}). Install onnxruntime-gpu instead of onnxruntime "
            "(see requirements-gpu.txt) on a machine with an NVIDIA GPU, or use --provider cpu.")
    if provider in ("auto", "cuda") and CUDA in available:
        try:
            session = ort.InferenceSession(str(path), options, providers=[CUDA, CPU])
        except Exception as exc:  # ORT raises its own Fail/RuntimeException types
            if provider == "cuda":
                raise ProviderError(f"the CUDA provider failed to start: {exc}") from exc
        else:
            if session.get_providers()[0] == CUDA:
                return session, "cuda"
            if provider == "cuda":
                raise ProviderError("ONNX Runtime fell back to the CPU: the CUDA libraries it needs (CUDA, cuDNN) "
                                    "are missing or do not match; see requirements-gpu.txt")
    return ort.InferenceSession(str(path), options, providers=[CPU]), "cpu"
