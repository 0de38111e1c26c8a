"""Feature extraction throughput against VGG16's bare forward-pass rate at the same batch size.

The pipeline side is the real `train.features.extract_features` over JPEG
files on disk (decode, EXIF, resize, forward pass, float16 cache writes); the
bare side is the same encoder on pixels already in memory. Their ratio says
how much the input side costs: the target is at least 0.85.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bench.effort import pick
from bench.images import photo_like_jpegs
from bench.timing import interleaved
from demo.preprocess import load_image
from train.config import FeaturesConfig, PrepareConfig
from train.encoder import EncoderSpec, build_encoder
from train.feature_cache import run_image_list
from train.features import extract_features
from train.prepare import run_prepare
from train.run_files import RunFiles


def _prepared_run(root: Path, count: int) -> Path:
    data = root / "data"
    photo_like_jpegs(data / "flickr30k_images", count)
    rows = ["image_name| comment_number| comment"]
    rows += [f"{i}.jpg| 0| a photo number {i}" for i in range(count)]
    (data / "results.csv").write_text("\n".join(rows) + "\n")
    run = root / "run"
    run_prepare(PrepareConfig(run=run, dataset="flickr30k", data_dir=data, min_count=1))
    return run


def measure(effort: str = "full", batch_size: int = 16) -> dict:
    count = batch_size * pick(effort, 1, 1, 4)
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        run = _prepared_run(Path(tmp), count)
        encoder = build_encoder(EncoderSpec("none", 0))
        root, ids = run_image_list(RunFiles(run))
        pixels = np.stack([load_image(root / i) for i in ids]).astype(np.float32)
        cfg = FeaturesConfig(run=run, vgg_weights="none", batch_size=batch_size, overwrite=True)
        encoder.predict_on_batch(pixels[:batch_size])  # warm-up: graph tracing is not throughput

        def pipeline() -> int:
            (run / "features" / "meta.json").unlink(missing_ok=True)
            extract_features(cfg, encoder=encoder)
            return count

        def bare() -> int:
            for start in range(0, count, batch_size):
                encoder.predict_on_batch(pixels[start:start + batch_size])
            return count

        rates = interleaved({"extract_features": pipeline, "bare_forward": bare}, repeats=pick(effort, 1, 2, 3))
    ratio = rates["extract_features"]["median_per_s"] / rates["bare_forward"]["median_per_s"]
    return {
        "name": "feature_extraction",
        "batch_size": batch_size,
        "images": count,
        "images_per_s": rates,
        "ratio_pipeline_to_bare": ratio,
        "target": {"ratio_at_least": 0.85, "met": ratio >= 0.85},
    }
