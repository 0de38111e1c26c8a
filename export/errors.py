"""The export's own errors: both mean nothing was installed and the previous bundle is still in place."""
from __future__ import annotations

from demo.errors import CaptionerError


class ExportError(CaptionerError, RuntimeError):
    """The export could not produce a bundle that passes its checks; nothing was installed."""


class ParityError(CaptionerError, RuntimeError):
    """The exported graph does not compute what the Keras model computes."""
