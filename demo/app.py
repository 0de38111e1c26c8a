"""The app's entry point for Hugging Face Spaces and containers, configured by environment variables.

This one file is both `demo/app.py` here and the `app.py` at the top of a Space folder
(`python -m export.space` copies it): in a Space, the runtime package `demo/` and the bundle
`onnx/` sit beside it; here, `demo/` is its own folder and the bundle defaults to models/default/onnx.

CAPTIONER_MODEL (bundle folder; default `onnx/` beside this file if there is one, else models/default/onnx),
CAPTIONER_PROVIDER (auto|cuda|cpu), CAPTIONER_HOST (default 0.0.0.0), CAPTIONER_PORT (or PORT), CAPTIONER_SHARE,
CAPTIONER_MAX_BATCH_SIZE (requests sharing encoder passes; 1: none), CAPTIONER_MAX_QUEUE (requests waiting beyond
those running), CAPTIONER_API_KEYS (comma-separated keys for the HTTP API and the page; unset: open).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE if (HERE / "demo").is_dir() else HERE.parent  # the folder that holds the `demo` package
if str(ROOT) not in sys.path:  # run as `python demo/app.py` or as a Space's top-level app.py
    sys.path.insert(0, str(ROOT))

from demo.bundle_layout import BUNDLE_DIR  # noqa: E402  (after the path set-up above)
from demo.errors import run_command  # noqa: E402
from demo.logs import configure_cli_logging  # noqa: E402
from demo.web.serve import ServeConfig, launch  # noqa: E402

if (HERE / BUNDLE_DIR).is_dir():  # a Space: the bundle sits beside this file
    os.environ.setdefault("CAPTIONER_MODEL", str(HERE / BUNDLE_DIR))


def main() -> int:
    configure_cli_logging()
    launch(ServeConfig.from_env())
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
