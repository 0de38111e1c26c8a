"""ONNX Runtime sessions with an explicit, reported execution provider.

`auto` uses CUDA when the CUDA provider is installed *and* it can run here,
else the CPU; `cuda` insists and fails with one line naming what is missing.
Whether CUDA can run is found out before any CUDA session is tried, by
loading what ORT would load (the driver, ORT's CUDA provider library and,
through it, CUDA and cuDNN): ORT itself would log a page of errors and fall
back to the CPU without saying so. With onnxruntime-gpu installed, `auto`
says once per process why it is not using CUDA; with the CPU build it is
quiet, since the CPU is then what was asked for. Threads default to the cores
this process may use, which is what ORT's own default misjudges in containers.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import os
import sys
from pathlib import Path

import onnxruntime as ort
from onnxruntime.capi import build_and_package_info as build

from demo.errors import BadInput, CaptionerError
from demo.session_memory import MemoryOptions

PROVIDERS = ("auto", "cuda", "cpu")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_REQUIREMENTS = "demo/requirements-gpu.txt"
log = logging.getLogger(__name__)


class ProviderError(CaptionerError, RuntimeError):
    """The requested execution provider cannot be used here."""


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _driver_problem() -> str | None:
    """Why the NVIDIA driver cannot give us a GPU, or None when it reports at least one."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 not found): install the driver, or run on a machine with a GPU"
    count = ctypes.c_int(0)
    status = driver.cuInit(0)
    if status == 0:
        status = driver.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value == 0:
        return f"the NVIDIA driver finds no usable GPU (CUDA driver status {status}, {count.value} devices)"
    return None


def _library_problem(ort) -> str | None:
    """Why ORT's CUDA provider library cannot load (CUDA or cuDNN missing or of another version), or None."""
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per library it did not find
        with contextlib.suppress(Exception):
            ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* pip packages, when installed
    provider = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    try:
        ctypes.CDLL(str(provider))
    except OSError as exc:
        missing = _first_line(exc).split(":")[0]
        if missing.startswith("libcuda.so"):
            return None  # the driver itself: _driver_problem says so
        wanted = f"CUDA {getattr(build, 'cuda_version', '?').split('.')[0]} and cuDNN 9"
        return (f"ONNX Runtime {ort.__version__} needs {wanted}, and {missing} cannot be loaded: install "
                f"onnxruntime-gpu with its [cuda,cudnn] extras ({GPU_REQUIREMENTS}) or the CUDA toolkit")
    return None


@functools.cache
def cuda_problem() -> str | None:
    """Why the CUDA provider cannot be used in this process, or None when it looks usable. Probed once."""
    if CUDA not in ort.get_available_providers():
        return (f"this ONNX Runtime is the CPU build (onnxruntime {ort.__version__}); install onnxruntime-gpu "
                f"instead ({GPU_REQUIREMENTS}, or requirements-gpu.txt with training) on a machine with an "
                "NVIDIA GPU")
    if sys.platform != "linux":
        return None  # the probes below know Linux library names; elsewhere the session itself tells
    problems = [problem for problem in (_driver_problem(), _library_problem(ort)) if problem]
    return "; and ".join(problems) or None


@functools.cache
def _explain_cpu_fallback(reason: str) -> None:
    """Said once per process, not once per session: a captioner opens several."""
    log.warning("note: ONNX Runtime runs on the CPU, not CUDA: %s", reason)


def _cpu_session(path: Path, options):
    return ort.InferenceSession(str(path), options, providers=[CPU]), "cpu"


def _cuda_session(path: Path, options):
    """A session whose first provider really is CUDA, or a ProviderError saying why not."""
    ort.set_default_logger_severity(4)  # our error says why; ORT's own log would add a page per session
    try:
        session = ort.InferenceSession(str(path), options, providers=[CUDA, CPU])
    except Exception as exc:  # ORT raises its own Fail/RuntimeException types
        raise ProviderError(f"the CUDA provider failed to start: {_first_line(exc)}") from None
    if session.get_providers()[0] != CUDA:
        raise ProviderError("ONNX Runtime fell back to the CPU: the CUDA libraries it needs (CUDA, cuDNN) are "
                            f"missing or do not match; see {GPU_REQUIREMENTS}")
    return session, "cuda"


def create_session(path: Path, provider: str = "auto", threads: int | None = None,
                   memory: MemoryOptions = MemoryOptions()):
    """Return (session, provider name actually in use)."""
    if provider not in PROVIDERS:
        raise BadInput(f"provider must be one of {PROVIDERS}, not {provider!r}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or usable_cores()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = memory.arena
    if not memory.prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if provider == "cpu":
        return _cpu_session(path, options)
    problem = cuda_problem()
    if problem is None:
        try:
            return _cuda_session(path, options)
        except ProviderError as exc:
            problem = str(exc)
    if provider == "cuda":
        raise ProviderError(f"provider 'cuda' cannot run here: {problem}")
    if CUDA in ort.get_available_providers():
        _explain_cpu_fallback(problem)
    return _cpu_session(path, options)
