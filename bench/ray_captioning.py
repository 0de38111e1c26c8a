"""A folder captioned as a Ray Data job against the one-process command, as a user runs each.

`python -m demo caption FOLDER --out X.jsonl --variant int8`, with and without `--engine ray` (a local cluster
the command starts, on 127.0.0.1), one process per run, start-up and model loading included, taking turns
(`bench.timing.interleaved`). Ray's fixed cost (cluster start, actors, their models) is the difference between
the two on a handful of images; what it costs per batch beyond that shows in the large folder's rate.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from bench.effort import pick
from bench.folder_captioning import folder_side
from bench.images import photo_like_jpegs
from bench.timing import interleaved
from demo import bundle_layout as layout
from train.run_files import RunFiles

TARGET_RATIO = 0.8  # Ray images/s over the one-process command's, same folder, 2 cores
SMALL = 8  # images in the folder that measures the fixed cost


def measure(run: Path, effort: str = "full") -> dict:
    bundle = RunFiles(run).bundle
    if not (bundle / layout.encoder_file("int8")).is_file():
        return {"name": "ray_captioning", "skipped": f"{bundle} has no int8 encoder (export --quantize int8)"}
    images, rounds = pick(effort, 16, 200, 1000), pick(effort, 1, 1, 2)
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        large = Path(tmp) / "large"
        photo_like_jpegs(large, images, seed=5)
        small = Path(tmp) / "small"
        photo_like_jpegs(small, SMALL, seed=6)
        outs = Path(tmp) / "outs"
        outs.mkdir()
        sides = {f"{engine}_{size}": folder_side(bundle, folder, outs, n, "cpu", "--engine", engine)
                 for engine in ("local", "ray") for size, folder, n in (("small", small, SMALL),
                                                                          ("large", large, images))}
        measured = interleaved(sides, rounds)
    rates = {name: row["median_per_s"] for name, row in measured.items()}
    ratio = rates["ray_large"] / rates["local_large"]
    return {"name": "ray_captioning", "images": images, "small_images": SMALL, "images_per_s": rates,
            "ray_fixed_cost_s": SMALL / rates["ray_small"] - SMALL / rates["local_small"],
            "ratio_ray_to_local": ratio, "target": {"ratio_at_least": TARGET_RATIO, "met": ratio >= TARGET_RATIO}}
