"""Versions of the converting and running tools, as recorded in a manifest or a cache key."""
from __future__ import annotations

from importlib import metadata

EXPORT_TOOLS = ("tf2onnx", "onnx", "onnxruntime", "tensorflow-cpu")


def tool_versions(names: tuple[str, ...] = EXPORT_TOOLS) -> dict[str, str]:
    """{name: version} of those installed (a CUDA machine has `tensorflow`, not `tensorflow-cpu`)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
