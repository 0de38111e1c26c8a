"""The int8 decoder step: dynamic quantization of its matrix products, shipped only when it captions like fp32.

Dynamic quantization (int8 weights, activations quantized per call) needs no
calibration and suits a step whose cost is reading its matrices: at Flickr scale
the H x V output layer (8.7 MB in fp32) is most of a step, whatever the rows. Unlike the encoder's, this variant is
gated on what users see: on the held-out split, greedy captions must equal
fp32's on at least 95% of images and BLEU-4 must move by at most 0.005.
Below that the export leaves the variant out (and says why); the fp32
decoder is always there.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from onnxruntime.quantization import QuantType, quantize_dynamic

from demo import bundle_layout as layout
from demo.vocab import Vocabulary
from export.parity import decode_all, topk_step_model
from export.quantize import without_preprocessing_advice
from train.evaluate import bleu_scores

log = logging.getLogger(__name__)
INT8 = layout.get_variant("int8").name  # the table's row whose graph this module makes (its figures keep the names)

MIN_IDENTICAL_GREEDY = 0.95
MAX_BLEU_4_CHANGE = 0.005
# Measured on the Flickr-scale decoder (V = 8,493, H = 256), 200 test images, step of 6 rows against fp32:
# MatMul + LSTM 90.0% greedy identical, x0.62; MatMul only 90.5%, x0.66-0.73; MatMulNBits 8-bit blocks of
# 32 (accuracy level 4) 91.0%, x0.98; 4-bit 37.5%. On the synthetic default MatMul + LSTM and MatMul only
# agree equally (77%), MatMul + LSTM the faster.
QUANTIZED_OPS = ["MatMul", "LSTM"]


def quantize_decoder(fp32_path: Path, int8_path: Path) -> None:
    with without_preprocessing_advice():
        quantize_dynamic(fp32_path, int8_path, op_types_to_quantize=QUANTIZED_OPS, weight_type=QuantType.QInt8,
                         per_channel=True)


def build_int8_decoder(work: Path, vocab: Vocabulary, features: np.ndarray,
                       references: list[list[list[str]]]) -> dict:
    """Write decoder_step_topk.int8.onnx, measure it against fp32, and delete it again if it fails its gate."""
    fp32_path, int8_path = work / layout.DEFAULT_DECODER, work / layout.decoder_file(INT8)
    quantize_decoder(fp32_path, int8_path)
    steps = {"fp32": topk_step_model(work, layout.DEFAULT_VARIANT), "int8": topk_step_model(work, INT8)}
    captions = {name: decode_all(step, features, vocab, 1) for name, step in steps.items()}
    identical = float(np.mean([a == b for a, b in zip(captions["fp32"], captions["int8"])]))
    bleu = {k: bleu_scores(references, [vocab.decode(c) for c in caps])["bleu_4"] for k, caps in captions.items()}
    change = bleu["int8"] - bleu["fp32"]
    passed = identical >= MIN_IDENTICAL_GREEDY and abs(change) <= MAX_BLEU_4_CHANGE
    result = {
        "evaluation_images": len(features),
        "bytes": {"fp32": fp32_path.stat().st_size, "int8": int8_path.stat().st_size},
        "quantized_ops": QUANTIZED_OPS,
        "greedy_identical_fraction": identical,
        "bleu_4": bleu,
        "bleu_4_change": change,
        "step_time_ratio": step_time_ratio(steps, features[:6]),
        "gate": {"greedy_identical_at_least": MIN_IDENTICAL_GREEDY, "bleu_4_change_at_most": MAX_BLEU_4_CHANGE},
        "shipped": passed,
    }
    summary = (f"greedy identical {identical:.1%} (at least {MIN_IDENTICAL_GREEDY:.0%}), BLEU-4 "
               f"{bleu['fp32']:.4f} -> {bleu['int8']:.4f} (change at most {MAX_BLEU_4_CHANGE}), "
               f"step time x{result['step_time_ratio']:.2f}")
    if passed:
        log.info(f"export:   int8 decoder: {summary}")
    else:
        int8_path.unlink()
        result["why"] = f"left out: {summary}"
        log.warning(f"export:   warning: the int8 decoder is left out of the bundle: {summary}")
    return result


def step_time_ratio(steps: dict, features: np.ndarray, repeats: int = 30) -> float:
    """int8 / fp32 time of one step over a beam-5-sized batch (6 rows per image)."""
    times = step_ms(steps, features, repeats)
    return times["int8"] / times["fp32"]


def step_ms(steps: dict, features: np.ndarray, repeats: int, warm_up: int = 1) -> dict[str, float]:
    """Median ms of one step per step model, over a beam-5-sized batch (5 beams + the shadow per image),
    the models taking turns so that each sees the same machine state."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    rows = np.repeat(np.arange(len(features)), 6)
    tokens = np.full(len(rows), 4, dtype=np.int64)  # the first non-special word
    states = {name: step.initial_state(features, ()) for name, step in steps.items()}
    for repeat in range(warm_up + repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step.step(tokens, rows, states[name])
            if repeat >= warm_up:
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: float(np.median(values)) for name, values in times.items()}
