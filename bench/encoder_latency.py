"""Encoder latency per image at batch 1 and 8: Keras fp32, ONNX Runtime fp32 and int8, against the GEMM peak.

The ONNX Runtime sessions run in this process; Keras runs in a worker
process (see `keras_encoder_worker`) that this one cues, so the three sides
still take turns round after round on the same machine state. Each side gets
a pause before its turn so the previous side's thread pool has gone idle.
Achieved GFLOP/s (2 x VGG16's multiply-accumulates per image / seconds) over
the measured fp32 GEMM peak says how close each side gets to the hardware.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.effort import pick
from bench.gemm_peak import best_of, measure_peak, vgg16_fc2_macs
from bench.timing import interleaved
from demo import bundle_layout as layout
from demo.sessions import create_session

TARGET_RATIO = 0.35  # int8 / fp32 latency, from the export issue
SETTLE_S = 0.3


class KerasEncoder:
    """Handle on the worker process: `forward(batch)` runs one forward pass there and waits for it."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-m", "bench.keras_encoder_worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the Keras encoder worker did not start (is TensorFlow installed?)")

    def forward(self, batch: int) -> int:
        self.process.stdin.write(f"{batch}\n")
        self.process.stdin.flush()
        if self.process.stdout.readline().strip() != "done":
            raise RuntimeError("the Keras encoder worker stopped answering")
        return batch

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def _ort_side(session, batch: int):
    pixels = np.random.default_rng(batch).integers(0, 255, (batch, 224, 224, 3), dtype=np.uint8)

    def run() -> int:
        session.run([layout.FEATURES], {layout.PIXELS: pixels})
        return batch
    return run


def measure(bundle: Path, effort: str = "full") -> dict:
    paths = {f"ort_{variant}": bundle / layout.encoder_file(variant) for variant in layout.VARIANTS}
    if not all(p.is_file() for p in paths.values()):
        return {"name": "encoder_latency", "skipped": f"{bundle} has no fp32 and int8 encoders "
                                                      "(export --quantize int8)"}
    size = pick(effort, 512, 2048, 3072)
    before = measure_peak(size, repeats=pick(effort, 1, 2, 3))
    flop_per_image = 2.0 * vgg16_fc2_macs()
    sessions = {name: create_session(path, "cpu")[0] for name, path in paths.items()}
    keras = KerasEncoder()
    result = {"name": "encoder_latency",
              "bytes": {k.removeprefix("ort_"): layout.model_bytes(p) for k, p in paths.items()},
              "gflop_per_image": flop_per_image / 1e9, "batches": {}}
    rates = {}
    try:
        for batch in (1, 8):
            sides = {name: _ort_side(session, batch) for name, session in sessions.items()}
            sides["keras_fp32"] = lambda b=batch: keras.forward(b)
            rates[batch] = interleaved(sides, pick(effort, 1, 2, 7), settle_s=pick(effort, 0, SETTLE_S, SETTLE_S),
                                        warm_up=True)
    finally:
        keras.close()
    result["gemm_peak"] = peak = best_of(before, measure_peak(size, repeats=pick(effort, 1, 2, 3)))
    for batch, timed in rates.items():
        result["batches"][str(batch)] = _summarise(timed, flop_per_image, peak["peak_gflops"])
    result["target_ratio_at_most"] = TARGET_RATIO
    result["met"] = {b: r["ratio_int8_to_fp32"] <= TARGET_RATIO for b, r in result["batches"].items()}
    return result


def _summarise(rates: dict[str, dict], flop_per_image: float, peak: float) -> dict:
    """Images/s per side (from `interleaved`) as ms per image, GFLOP/s and ratios."""
    median = {name: 1000 / r["median_per_s"] for name, r in rates.items()}
    gflops = {name: flop_per_image / (value / 1000) / 1e9 for name, value in median.items()}
    return {"ms_per_image": median,
            "spread_ms": {n: [1000 / r["max_per_s"], 1000 / r["min_per_s"]] for n, r in rates.items()},
            "gflops": gflops, "fraction_of_fp32_peak": {n: g / peak for n, g in gflops.items()},
            "ratio_int8_to_fp32": median["ort_int8"] / median["ort_fp32"],
            "ratio_keras_to_ort_fp32": median["keras_fp32"] / median["ort_fp32"]}
