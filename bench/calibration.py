"""What `--vgg-weights calibrated` costs: seconds and peak memory to compute the weights, and those seconds in
VGG16 forward passes of the calibration images (the same network, the same images, on this machine).

The calibration is the real `train.calibrated_vgg16.calibrated_weights` on a freshly prepared synthetic run,
so the time includes reading the images and writing the weights file, as `make demo` pays it offline.
"""
from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.effort import pick
from train.calibrated_vgg16 import Calibration, calibrated_weights, calibration_images
from train.config import PrepareConfig
from train.encoder import EncoderSpec, build_encoder
from train.prepare import run_prepare
from train.run_files import RunFiles

TARGET_SECONDS = 90  # on the slowest 2-core machine (AMD EPYC, AVX2 only)
TARGET_PEAK_GIB = 4.0


def measure(effort: str = "full") -> dict:
    full = Calibration()
    cfg = Calibration(images=pick(effort, 8, full.images, full.images),
                      patches=pick(effort, 1000, full.patches, full.patches))
    with tempfile.TemporaryDirectory(prefix="bench-calibration-") as tmp:
        run = Path(tmp) / "run"
        run_prepare(PrepareConfig(run=run, num_images=max(120, 2 * cfg.images)))
        files = RunFiles(run)
        started = time.perf_counter()
        path = calibrated_weights(files, cfg)
        seconds = time.perf_counter() - started
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # before VGG16 is built
        forward = _forward_seconds(str(path), calibration_images(files, cfg))
    return {"name": "calibration", "images": cfg.images, "patches": cfg.patches, "seconds": round(seconds, 1),
            "peak_rss_gib": round(peak_gib, 2), "forward_seconds": round(forward, 2),
            "ratio_to_forward": seconds / forward,
            "target": {"seconds_at_most": TARGET_SECONDS, "peak_gib_at_most": TARGET_PEAK_GIB,
                       "met": seconds <= TARGET_SECONDS and peak_gib <= TARGET_PEAK_GIB}}


def _forward_seconds(weights: str, pixels: np.ndarray) -> float:
    """VGG16 to fc2 with the calibrated weights over the calibration images, batch 16, after a warm-up."""
    encoder = build_encoder(EncoderSpec(weights))
    encoder.predict_on_batch(pixels[:16])
    started = time.perf_counter()
    for start in range(0, len(pixels), 16):
        encoder.predict_on_batch(pixels[start:start + 16])
    return time.perf_counter() - started
