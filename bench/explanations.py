"""Occlusion explanations (`demo.occlusion`): what one costs, fp32 and int8, and whether its maps point at the
shapes their words name (`train.pointing_game`), on the run's synthetic test split.

Each variant explains the greedy caption of the same test images, one after another in this process (the CLI's
and the page's work: the search, 50 encoder passes in batches of 8, one decoder step per word); the time is per
explanation, search included. The pointing game scores every explained caption's rightly named shapes.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.effort import measured_variants, pick
from demo import bundle_layout as layout
from demo.generation import GENERATION
from demo.occlusion import GRID, explain_image
from train.captions_file import read_captions
from train.pointing_game import score_explanations
from train.run_files import RunFiles
from train.scene_scoring import load_scenes

TARGET_INT8_SECONDS = 3.0  # one image, one caption, 2 cores


def measure(run: Path, effort: str = "full", provider: str = "cpu") -> dict:
    from demo.captioner import Captioner  # lazy: the other rows need no ONNX Runtime session in this process

    files = RunFiles(run)
    bundle = files.bundle
    if not all((bundle / layout.encoder_file(v)).is_file() for v in layout.VARIANTS):
        return {"name": "explanations", "skipped": f"{bundle} has no fp32 and int8 encoders (export --quantize int8)"}
    captions = read_captions(files.captions)
    entries = captions.split("test")[:pick(effort, 1, 16, 150)]
    scenes = load_scenes(captions, [e.id for e in entries])
    if scenes is None or scenes.not_scored:
        return {"name": "explanations", "skipped": "not a synthetic run with scene records: nothing to point at"}
    images = [Path(captions.image_root) / e.id for e in entries]
    variants = {}
    for variant in measured_variants(effort):
        captioner = Captioner(bundle, provider=provider, variant=variant)
        if effort != "smoke":  # warm-up: the first passes allocate (a smoke run checks the rows, not the time)
            explain_image(captioner, images[0], GENERATION)
        seconds, explanations = [], []
        for image in images:
            started = time.perf_counter()
            explanations.append(explain_image(captioner, image, GENERATION))
            seconds.append(time.perf_counter() - started)
        variants[variant] = {"seconds_median": float(np.median(seconds)),
                             "seconds_p95": float(np.percentile(seconds, 95)),
                             "encoder_ms_median": float(np.median([e.timings_ms["encoder_ms"] for e in explanations])),
                             "pointing": score_explanations(list(zip(explanations, scenes.scenes)))}
    int8 = variants["int8"]["seconds_median"]  # every effort measures int8
    return {"name": "explanations", "images": len(images), "provider": provider, "grid": GRID.to_dict(),
            "variants": variants, "target": {"int8_seconds_at_most": TARGET_INT8_SECONDS,
                                             "met": int8 <= TARGET_INT8_SECONDS}}
