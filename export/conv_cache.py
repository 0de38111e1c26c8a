"""The converted convolutional part, kept in the run for the next export of the same VGG16.

tf2onnx takes a minute or more on VGG16's conv stack, and its result depends only on the encoder's weights, the
opset, the preprocessing built into the graph and the converting tools: a re-export after another `fit` (or a
refused export retried) reuses it. What is reused is still checked like a fresh conversion (onnx.checker, parity
with Keras' own features), so a stale or damaged entry cannot reach a bundle.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from demo.artifacts import atomic_write_bytes, atomic_write_json, read_json, sha256_file
from demo.preprocess import IMAGE_SIZE, PREPROCESS_VERSION
from export.tool_versions import tool_versions
from train.encoder import EncoderSpec

log = logging.getLogger(__name__)
CACHE_DIR = "export_cache"
ONNX_FILE, KEY_FILE = "conv_part.onnx", "conv_part.json"


def cache_key(spec: EncoderSpec, opset: int) -> dict:
    """Everything the converted graph depends on."""
    return {"weights": spec.describe(), "opset": opset, "preprocess": PREPROCESS_VERSION, "image_size": IMAGE_SIZE,
            "tools": tool_versions(("tf2onnx", "tensorflow-cpu", "tensorflow", "onnx"))}


def reuse(run: Path, key: dict, into: Path) -> bool:
    """Copy the cached conv part to `into` if it was converted under `key` and is intact; whether it was."""
    folder = run / CACHE_DIR
    if not (folder / KEY_FILE).is_file() or not (folder / ONNX_FILE).is_file():
        return False
    recorded = read_json(folder / KEY_FILE, "conv part cache record")
    if recorded.get("key") != key or recorded.get("sha256") != sha256_file(folder / ONNX_FILE):
        log.info("export: the cached conv part in %s is for other weights, tools or settings: converting again",
                 folder)
        return False
    shutil.copyfile(folder / ONNX_FILE, into)
    return True


def store(run: Path, key: dict, converted: Path) -> None:
    """Keep `converted` for the next export: the graph first, then the record that vouches for it (atomically)."""
    folder = run / CACHE_DIR
    atomic_write_bytes(folder / ONNX_FILE, converted.read_bytes())  # the conv part alone: about 60 MB
    atomic_write_json(folder / KEY_FILE, {"key": key, "sha256": sha256_file(folder / ONNX_FILE)})

