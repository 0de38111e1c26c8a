"""Logging for the command-line entry points; a library user who configures nothing sees warnings only.

Every module logs to `logging.getLogger(__name__)`, one line per event. The
entry points call `configure_cli_logging`, which sends the project's loggers
(not the root logger: third-party INFO chatter stays off) to stderr, so that
stdout carries only what users parse (captions, JSON, tables).
"""
from __future__ import annotations

import logging
import sys

PROJECT_LOGGERS = ("demo", "train", "export", "pipeline", "bench")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is logged, not the stream it was created with.

    The handler is installed once per process; a caller that later redirects stderr (a test capturing
    output, `contextlib.redirect_stderr`) still gets the lines.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))  # messages carry their own "stage:" or "warning:"

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns one; the property always reads sys.stderr
        pass


def configure_cli_logging(level: int = logging.INFO) -> None:
    """Send the project's log lines to stderr (idempotent: a second call changes only the level)."""
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
            logger.addHandler(_StderrHandler())
        logger.propagate = False
