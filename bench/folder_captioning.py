"""A folder to a file: `python -m demo caption FOLDER --out X.jsonl --variant int8`, default batch vs batch 1.

What a user runs to caption a photo collection, timed from the outside: one process per run, start-up and
model loading included, the two batch sizes taking turns (`bench.timing.interleaved`) so both see the same
machine. Each run writes a fresh results file (a second run on the same file would skip every image) and
must caption every image.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from itertools import count
from pathlib import Path

from bench.effort import pick
from bench.images import photo_like_jpegs
from bench.timing import interleaved
from demo import bundle_layout as layout
from demo.caption_batches import DEFAULT_BATCH_SIZE
from train.run_files import RunFiles

TARGET_RATIO = 2.0  # default batch over batch 1, images/s


def folder_side(bundle: Path, folder: Path, outs: Path, images: int, provider: str, *extra: str):
    """A callable that captions `folder` once (int8, `extra` flags added) into a new file and returns how many
    images it captioned; a run that fails or misses an image raises."""
    runs = count()
    label = "-".join(part.strip("-") for part in extra) or "default"

    def run() -> int:
        out = outs / f"{label}-{folder.name}-{next(runs)}.jsonl"
        command = [sys.executable, "-m", "demo", "caption", str(folder), "--model", str(bundle), "--variant", "int8",
                   "--provider", provider, "--out", str(out), *extra]
        result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        rows = out.read_text().count("\n") if out.is_file() else 0
        if result.returncode != 0 or rows != images:
            raise RuntimeError(f"{' '.join(command)}: exit {result.returncode}, {rows} of {images} rows: "
                               f"{result.stderr[-1500:]}")
        return images

    return run


def measure(run: Path, effort: str = "full", provider: str = "cpu") -> dict:
    bundle = RunFiles(run).bundle
    if not (bundle / layout.encoder_file("int8")).is_file():
        return {"name": "folder_captioning", "skipped": f"{bundle} has no int8 encoder (export --quantize int8)"}
    images, repeats = pick(effort, (16, 1), (50, 1), (200, 2))
    with tempfile.TemporaryDirectory(prefix="bench-folder-") as tmp:
        folder = Path(tmp) / "photos"
        photo_like_jpegs(folder, images, seed=11)
        sides = {"batch_default": folder_side(bundle, folder, Path(tmp), images, provider),
                 "batch_1": folder_side(bundle, folder, Path(tmp), images, provider, "--batch-size", "1")}
        rates = interleaved(sides, repeats)
    ratio = rates["batch_default"]["median_per_s"] / rates["batch_1"]["median_per_s"]
    return {"name": "folder_captioning", "images": images, "image_size": [500, 375], "variant": "int8",
            "provider": provider, "default_batch_size": DEFAULT_BATCH_SIZE, "images_per_s": rates,
            "ratio_default_to_batch1": ratio, "target": {"ratio_at_least": TARGET_RATIO, "met": ratio >= TARGET_RATIO}}
