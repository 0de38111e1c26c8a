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


def configure_cli_logging(level: int = logging.INFO) -> None:
    """Send the project's log lines to stderr (idempotent: a second call changes only the level)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))  # messages carry their own "stage:" or "warning:"
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(getattr(h, "_captioner", False) for h in logger.handlers):
            handler._captioner = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.propagate = False
