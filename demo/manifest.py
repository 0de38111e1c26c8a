"""The ONNX bundle's `manifest.json`: what export promises and what a loader checks.

A bundle is a folder with `encoder.onnx`, `decoder_step.onnx`, `image_projection.onnx`,
`decoder_step_topk.onnx`, `vocab.json`, optionally the int8 variants, and this manifest: file hashes, graph input
and output names, shapes and dtypes, vocabulary and hidden sizes, the opset,
the run it came from and the parity figures export measured. `verify_bundle`
refuses anything that does not match, naming the file and what to do, so a
damaged or mixed-up bundle never produces a wrong caption.
"""
from __future__ import annotations

import os
from pathlib import Path

from demo.artifacts import read_json, sha256_file
from demo.bundle_layout import MANIFEST
from demo.errors import CaptionerError

FORMAT = "vgg16-lstm-captioner/onnx-bundle"
FORMAT_VERSION = 2  # 2: the top-k decoder step (decoder_step_topk[.int8].onnx) replaced decoder_step_image.onnx
REBUILD = "re-run `python -m export --run RUN` (or `make demo` for the default model)"


class BundleError(CaptionerError, ValueError):
    """A bundle that cannot be trusted; the message names the file and the fix."""


def file_record(path: str | os.PathLike) -> dict:
    path = Path(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def io_record(values) -> list[dict]:
    """Names, shapes (None for dynamic axes) and dtypes of ONNX Runtime inputs or outputs."""
    return [{"name": v.name, "shape": [d if isinstance(d, int) else None for d in v.shape], "dtype": v.type}
            for v in values]


def verify_bundle(bundle: str | os.PathLike, check_hashes: bool = True) -> dict:
    """Load the manifest and check every file it lists; return the manifest."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        previous = bundle.with_name(bundle.name + ".previous")
        hint = (f" (an interrupted export left {previous}: rename it to {bundle.name})"
                if previous.is_dir() else "")
        raise BundleError(f"no ONNX bundle at {bundle}{hint}; {REBUILD}")
    try:
        manifest = read_json(bundle / MANIFEST, "bundle manifest")
    except (FileNotFoundError, ValueError) as exc:
        raise BundleError(f"{exc}; {REBUILD}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{bundle / MANIFEST} is not a {FORMAT} manifest; {REBUILD}")
    if manifest.get("version") != FORMAT_VERSION:
        raise BundleError(f"{bundle / MANIFEST} has version {manifest.get('version')}, this code reads "
                          f"version {FORMAT_VERSION}; {REBUILD}")
    for name, record in manifest.get("files", {}).items():
        _check_file(bundle / name, record, check_hashes)
    return manifest


def verify_files(bundle: str | os.PathLike, manifest: dict, names) -> None:
    """Check the size and sha256 of some of a bundle's files against `manifest` (from an earlier
    `verify_bundle`): for files opened later than that check, which may have been replaced since."""
    for name in names:
        _check_file(Path(bundle) / name, manifest["files"][name], check_hash=True)


def _check_file(path: Path, record: dict, check_hash: bool) -> None:
    if not path.is_file():
        raise BundleError(f"{path} is listed in the manifest but missing; {REBUILD}")
    if path.stat().st_size != record.get("bytes"):
        raise BundleError(f"{path} has {path.stat().st_size} bytes, the manifest says {record.get('bytes')}: "
                          f"the file is damaged or from another export; {REBUILD}")
    if check_hash and sha256_file(path) != record.get("sha256"):
        raise BundleError(f"{path} does not match its sha256 in the manifest: the file is damaged or from "
                          f"another export; {REBUILD}")
