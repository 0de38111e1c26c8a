"""ONNX Runtime encoder latency per image, fp32 against int8, at batch 1 and 8, on this machine's cores.

Both sessions are created in this process and timed interleaved, after a
warm-up, so the ratio compares like with like.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

TARGET_RATIO = 0.35


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def measure(bundle: Path, quick: bool = False) -> dict:
    paths = {"fp32": bundle / "encoder.onnx", "int8": bundle / "encoder.int8.onnx"}
    if not all(p.is_file() for p in paths.values()):
        return {"name": "encoder_latency", "skipped": f"{bundle} has no fp32 and int8 encoders (export --quantize int8)"}
    sessions = {name: _session(path) for name, path in paths.items()}
    result = {"name": "encoder_latency", "bytes": {k: p.stat().st_size for k, p in paths.items()}, "batches": {}}
    for batch in (1, 8):
        pixels = np.random.default_rng(batch).integers(0, 255, (batch, 224, 224, 3), dtype=np.uint8)
        for session in sessions.values():
            session.run(["features"], {"pixels": pixels})
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(3 if quick else 7):
            for name, session in sessions.items():
                started = time.perf_counter()
                session.run(["features"], {"pixels": pixels})
                times[name].append((time.perf_counter() - started) / batch * 1000)
        median = {name: float(np.median(v)) for name, v in times.items()}
        result["batches"][str(batch)] = {"ms_per_image": median, "spread_ms": {n: [min(v), max(v)] for n, v in times.items()},
                                         "ratio_int8_to_fp32": median["int8"] / median["fp32"]}
    result["target_ratio_at_most"] = TARGET_RATIO
    result["met"] = {b: r["ratio_int8_to_fp32"] <= TARGET_RATIO for b, r in result["batches"].items()}
    return result
