"""This machine's fp32 matrix-multiply peak, measured: the ceiling the encoder's GFLOP/s is compared with.

A large square GEMM is as close to the hardware's arithmetic limit as a
library gets; VGG16's convolutions are GEMMs too, so the ratio of the
encoder's achieved rate to this one says how much is left on the table.
Both numpy's BLAS and ONNX Runtime's MLAS (what the encoder runs on) are
tried; the faster one is the peak.
"""
from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from train.encoder import VGG16_BLOCKS


def vgg16_fc2_macs(image_size: int = 224) -> int:
    """Multiply-accumulates of VGG16 from pixels to fc2 for one image, counted from the architecture."""
    macs, size, channels = 0, image_size, 3
    for width, convs in VGG16_BLOCKS:
        for _ in range(convs):
            macs += size * size * 9 * channels * width
            channels = width
        size //= 2
    return macs + size * size * channels * 4096 + 4096 * 4096


def _best_rate(call, flop: float, repeats: int) -> float:
    call()  # warm-up: thread pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return flop / best / 1e9


def _ort_matmul(n: int):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    # IR 8, as the exported bundle has: onnx's own default (14 with onnx 1.23) is newer than ONNX Runtime 1.31 reads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def measure_peak(n: int = 3072, repeats: int = 3) -> dict:
    """GFLOP/s of an n x n x n fp32 GEMM (2 n^3 flops) with numpy and with ONNX Runtime, best of `repeats`."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    flop = 2.0 * n ** 3
    session = _ort_matmul(n)
    rates = {"numpy": _best_rate(lambda: a @ b, flop, repeats),
             "onnxruntime": _best_rate(lambda: session.run(["c"], {"a": a, "b": b}), flop, repeats)}
    return {"n": n, "gflops": rates, "peak_gflops": max(rates.values())}


def best_of(*peaks: dict) -> dict:
    """Several peak measurements (before and after a benchmark) folded into one: the highest rate per library."""
    rates = {lib: max(p["gflops"][lib] for p in peaks) for lib in peaks[0]["gflops"]}
    return {"n": peaks[0]["n"], "gflops": rates, "peak_gflops": max(rates.values()), "measurements": len(peaks)}
