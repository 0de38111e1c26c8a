"""Interleaved repetitions: both sides of a comparison see the same machine state."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(sides: dict[str, Callable[[], int]], repeats: int, settle_s: float = 0.0,
                warm_up: bool = False) -> dict[str, dict]:
    """Run each side once per round, round after round; each call returns how many items it did.

    `warm_up` runs every side once, untimed, first (tracing, session and thread-pool start-up are not
    throughput). `settle_s` pauses (untimed) before each side, so thread pools that spin
    after work (TensorFlow's, ONNX Runtime's) go idle instead of competing with
    the next side for the cores. Returns per side the median and spread of
    items per second.
    """
    for work in sides.values() if warm_up else ():
        work()
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, work in sides.items():
            time.sleep(settle_s)
            started = time.perf_counter()
            items = work()
            rates[name].append(items / (time.perf_counter() - started))
    return {
        name: {
            "median_per_s": statistics.median(values),
            "min_per_s": min(values),
            "max_per_s": max(values),
            "repeats": len(values),
        }
        for name, values in rates.items()
    }
