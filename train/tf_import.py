"""Import TensorFlow/Keras without the C++ start-up chatter that buries our progress output.

TensorFlow prints oneDNN and absl notices to file descriptor 2 before its
logging can be configured, so `TF_CPP_MIN_LOG_LEVEL` cannot silence them.
The import runs with fd 2 pointed at a temporary file; afterwards every line
that is not one of those notices is replayed, and on failure everything is.
"""
from __future__ import annotations

import os
import sys
import tempfile

_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ", "To enable the following instructions")


def prefer_bfc_allocator() -> None:
    """Have TensorFlow reuse freed CPU buffers instead of returning them to the system.

    Training with `--fine-tune-top` frees and allocates fc1-sized (400 MB) buffers several times a step; with
    the default allocator each one is a fresh mmap whose pages the kernel zeroes again: measured on 2 cores,
    3 s of 5 s per step were system time. Only effective before TensorFlow is first imported.
    """
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


def import_keras():
    """Return the `keras` module, importing TensorFlow quietly on first use."""
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            # lazy: the point of this module: TensorFlow is imported once, here, with fd 2 captured
            import keras
            import tensorflow  # noqa: F401  (keras' backend)

            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            lines = text.splitlines() if failed else [ln for ln in text.splitlines() if not ln.startswith(_NOISE)]
            if lines:
                print("\n".join(lines), file=sys.stderr)
    return keras
