"""The int8 encoder and its own parity figures against the fp32 ONNX encoder.

The export fails (leaving the previous bundle) when the mean cosine
similarity of int8 and fp32 features is below 0.99. The share of identical
greedy captions (target 90%) and the BLEU-4 change are reported, with a
warning below target, but do not fail it: a decoder trained on a random-init
encoder's features (the offline synthetic default) flips its shape word under
perturbations far smaller than int8's, so caption agreement there says more
about the features than about the quantization (see the README). On the
synthetic scenes, both sides' greedy captions are also scored against their
scenes (`train.scene_scoring`: shape word, colour, size, position,
background), so a change in agreement shows what it costs. Also
reported: file sizes, the minimum cosine, and a quick batch-1 latency ratio
(the benchmark suite measures latency properly).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from demo import bundle_layout as layout
from demo.preprocess import load_image
from demo.vocab import Vocabulary
from export.errors import ParityError
from export.parity import cpu_session, decode_all, encode, topk_step_model
from export.quantize import cosine_similarity, quantize_encoder
from train.evaluate import bleu_scores
from train.scene_scoring import Scenes, comparison

log = logging.getLogger(__name__)
INT8 = layout.get_variant("int8").name  # the table's row whose graph this module makes (its figures keep the names)

MIN_MEAN_COSINE = 0.99
MIN_IDENTICAL_GREEDY = 0.90


def build_int8_encoder(work: Path, vocab: Vocabulary, calibration: list[Path], evaluation: list[Path],
                       references: list[list[list[str]]], scenes: Scenes | None = None) -> dict:
    """`scenes`: the evaluation images' scenes on a synthetic run (None for other datasets)."""
    fp32_path, int8_path = work / layout.DEFAULT_ENCODER, work / layout.encoder_file(INT8)
    quantize_encoder(fp32_path, int8_path, calibration)
    pixels = np.stack([load_image(p) for p in evaluation])
    fp32, int8 = cpu_session(fp32_path), cpu_session(int8_path)
    features = {"fp32": encode(fp32, pixels), "int8": encode(int8, pixels)}
    cosine = cosine_similarity(features["fp32"], features["int8"])
    step = topk_step_model(work)
    captions = {k: decode_all(step, f, vocab, 1) for k, f in features.items()}
    identical = float(np.mean([a == b for a, b in zip(captions["fp32"], captions["int8"])]))
    words = {k: [vocab.decode(c) for c in caps] for k, caps in captions.items()}
    bleu = {k: bleu_scores(references, hypotheses)["bleu_4"] for k, hypotheses in words.items()}
    result = {
        "calibration_images": len(calibration),
        "evaluation_images": len(evaluation),
        "bytes": {"fp32": layout.model_bytes(fp32_path), "int8": layout.model_bytes(int8_path)},
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "greedy_identical_fraction": identical,
        "bleu_4": bleu,
        "bleu_4_change": bleu["int8"] - bleu["fp32"],
        "latency_ratio_batch_1": _latency_ratio(fp32, int8, pixels[:1]),
        "bounds": {"cosine_mean_at_least": MIN_MEAN_COSINE},
        "targets": {"greedy_identical_at_least": MIN_IDENTICAL_GREEDY,
                    "greedy_identical_met": identical >= MIN_IDENTICAL_GREEDY},
    }
    if scenes is not None:
        result["scene"] = {k: scenes.score(hypotheses) for k, hypotheses in words.items()}
    if result["cosine_mean"] < MIN_MEAN_COSINE:
        raise ParityError(f"the int8 encoder is too far from fp32 (mean feature cosine {result['cosine_mean']:.4f} "
                          f"< {MIN_MEAN_COSINE}); export without --quantize int8, or calibrate on more images "
                          "(--calibration-images)")
    if identical < MIN_IDENTICAL_GREEDY:
        log.warning(f"export:   warning: int8 greedy captions equal fp32's on {identical:.0%} of test images "
                    f"(target {MIN_IDENTICAL_GREEDY:.0%}); the fp32 encoder stays the default")
    log.info(f"export:   int8: {result['bytes']['int8'] / 1e6:.0f} MB (fp32 {result['bytes']['fp32'] / 1e6:.0f} "
             f"MB), cosine {result['cosine_mean']:.4f}, greedy identical {identical:.0%}, "
             f"BLEU-4 {bleu['fp32']:.3f} -> {bleu['int8']:.3f}")
    if scenes is not None:
        log.info(f"export:   int8 greedy captions against their scenes, fp32 -> int8: "
                 f"{comparison(result['scene']['fp32'], result['scene']['int8'])}")
    return result


def _latency_ratio(fp32, int8, pixels: np.ndarray, repeats: int = 5) -> float:
    times = {"fp32": [], "int8": []}
    for session in (fp32, int8):
        session.run([layout.FEATURES], {layout.PIXELS: pixels})
    for _ in range(repeats):
        for name, session in (("fp32", fp32), ("int8", int8)):
            started = time.perf_counter()
            session.run([layout.FEATURES], {layout.PIXELS: pixels})
            times[name].append(time.perf_counter() - started)
    return float(np.median(times["int8"]) / np.median(times["fp32"]))
