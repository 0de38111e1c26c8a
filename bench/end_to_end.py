"""Image file to caption in a TF-free process: p50/p95 latency, time per stage, peak RSS, cold start.

One fresh `bench.runtime_worker` process per variant and round, fp32 and
int8 taking turns, each captioning the same Flickr-sized JPEGs one request
at a time (decode, encoder, greedy, beam 3). Cold start is from process
start to the first caption, imports and session creation included.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.effort import pick
from bench.images import photo_like_jpegs
from demo import bundle_layout as layout
from demo.generation import COMPARED

VARIANTS = layout.VARIANTS
STAGES = ("preprocess", "encoder", "greedy", "beam3")


def _one_process(bundle: Path, variant: str, images: list[Path], provider: str) -> dict:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "bench.runtime_worker", "--bundle", str(bundle),
                                "--variant", variant, "--provider", provider, *map(str, images)],
                               stdout=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    cold_start_s = time.perf_counter() - started
    report = process.stdout.readline()
    if process.wait(timeout=600) != 0 or first.strip() != "first-caption":
        raise RuntimeError(f"runtime worker for {variant} failed (exit {process.returncode})")
    return json.loads(report) | {"cold_start_s": cold_start_s}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _summarise(runs: list[dict]) -> dict:
    rows = [row for run in runs for row in run["ms"]]
    totals = [row["total"] for row in rows]
    return {
        "requests": len(rows),
        "p50_ms": _percentile(totals, 50),
        "p95_ms": _percentile(totals, 95),
        "stage_median_ms": {stage: statistics.median(row[stage] for row in rows) for stage in STAGES},
        "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
        "cold_start_s": statistics.median(run["cold_start_s"] for run in runs),
        "cold_start_spread_s": [min(r["cold_start_s"] for r in runs), max(r["cold_start_s"] for r in runs)],
        "tensorflow_loaded": any(run["tensorflow_loaded"] for run in runs),
        "provider": runs[0]["provider"],
    }


def measure(bundle: Path, effort: str = "full", provider: str = "cpu") -> dict:
    if not all((bundle / layout.encoder_file(v)).is_file() for v in VARIANTS):
        return {"name": "end_to_end", "skipped": f"{bundle} has no fp32 and int8 encoders (export --quantize int8)"}
    count, rounds = pick(effort, (4, 1), (20, 1), (50, 2))
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        images = photo_like_jpegs(Path(tmp), count + 1, seed=7)  # +1: the cold-start image is not counted
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for _ in range(rounds):
            for variant in VARIANTS:
                runs[variant].append(_one_process(bundle, variant, images, provider))
    return {"name": "end_to_end", "images": count, "rounds": rounds, "image_size": [500, 375],
            "beams": COMPARED.num_beams, "variants": {v: _summarise(r) for v, r in runs.items()}}
