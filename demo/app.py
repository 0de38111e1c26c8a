"""Hugging Face Space entry point (`app_file: app.py`): the captioner app, configured by environment.

CAPTIONER_MODEL (bundle folder, default `onnx` beside this file if present, else models/default/onnx),
CAPTIONER_PROVIDER (auto|cuda|cpu), CAPTIONER_HOST, CAPTIONER_PORT (or PORT), CAPTIONER_SHARE.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run as `python demo/app.py` or as a Space's top-level app.py
    sys.path.insert(0, str(HERE.parent))
if (HERE / "onnx").is_dir():
    os.environ.setdefault("CAPTIONER_MODEL", str(HERE / "onnx"))

from demo.serve import ServeConfig, launch  # noqa: E402

if __name__ == "__main__":
    launch(ServeConfig.from_env())
