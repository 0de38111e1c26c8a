"""Feature extraction throughput against VGG16's bare forward-pass rate at the same batch size, and each
engine's share of this machine's fp32 GEMM peak.

The pipeline side is the real `train.features.extract_features` over JPEG
files on disk (decode, EXIF, resize, forward pass, float16 cache writes); the
bare side is the same encoder on pixels already in memory. Their ratio says
how much the input side costs: the target is at least 0.85. With a bundle
(`--run`), the same extraction also runs on its fp32 encoder graph through
ONNX Runtime (`make demo`'s engine; the graph's weights are the bundle's,
which does not change the cost), and both engines' images/s are put against
the GEMM peak (VGG16's FLOPs x images/s / peak; target: 0.8).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bench.effort import pick
from bench.gemm_peak import best_of, measure_peak, vgg16_fc2_macs
from bench.images import photo_like_jpegs
from bench.timing import interleaved
from demo import bundle_layout as layout
from demo.preprocess import load_image
from export.feature_encoder import OnnxFeatureEncoder
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


PEAK_SHARE_TARGET = 0.8


def measure(effort: str = "full", batch_size: int = 16, bundle: Path | None = None) -> dict:
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

        sides = {"extract_features": pipeline, "bare_forward": bare}
        encoder_graph = None if bundle is None else bundle / layout.DEFAULT_ENCODER
        if encoder_graph is not None and encoder_graph.is_file():
            onnx_encoder = OnnxFeatureEncoder(encoder_graph, "cpu")
            onnx_encoder.predict_on_batch(pixels[:batch_size])

            def pipeline_onnx() -> int:
                (run / "features" / "meta.json").unlink(missing_ok=True)
                extract_features(cfg, encoder=onnx_encoder)
                return count

            sides["extract_features_onnx"] = pipeline_onnx
        peak_before = measure_peak(repeats=pick(effort, 1, 2, 3))
        rates = interleaved(sides, repeats=pick(effort, 1, 2, 3))
        peak = best_of(peak_before, measure_peak(repeats=pick(effort, 1, 2, 3)))
    ratio = rates["extract_features"]["median_per_s"] / rates["bare_forward"]["median_per_s"]
    gflop = 2 * vgg16_fc2_macs() / 1e9
    shares = {side: rates[side]["median_per_s"] * gflop / peak["peak_gflops"]
              for side in ("extract_features", "extract_features_onnx") if side in rates}
    return {
        "name": "feature_extraction",
        "batch_size": batch_size,
        "images": count,
        "images_per_s": rates,
        "ratio_pipeline_to_bare": ratio,
        "target": {"ratio_at_least": 0.85, "met": ratio >= 0.85},
        "gflop_per_image": gflop,
        "gemm_peak": peak,
        "share_of_fp32_peak": shares,
        "peak_target": {"share_at_least": PEAK_SHARE_TARGET,
                        "met": {side: share >= PEAK_SHARE_TARGET for side, share in shares.items()}},
    }
