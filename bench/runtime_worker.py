"""One captioning process, as a deployment runs it: TF-free, bundle loaded once, image files in, captions out.

Run by `bench.end_to_end` once per encoder variant, so each process's peak
RSS is that variant's alone. Each image goes through what one web request
does (decode and resize, one encoder pass, greedy and beam 3 on the same
features); the per-stage times come back as JSON on stdout, after a
`first-caption` line the parent uses to time the cold start.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.machine import peak_rss_mib
from demo.sessions import PROVIDERS


def caption_file(captioner, path: Path, greedy, beam) -> dict[str, float]:
    from demo.preprocess import load_image

    started = time.perf_counter()
    pixels = load_image(path)[None]
    times = {"preprocess": time.perf_counter() - started}
    features, _ = captioner.encode(pixels)
    times["encoder"] = time.perf_counter() - started - times["preprocess"]
    captioner.caption_features(features, greedy, {})
    times["greedy"] = time.perf_counter() - started - times["preprocess"] - times["encoder"]
    captioner.caption_features(features, beam, {})
    total = time.perf_counter() - started
    times["beam3"] = total - sum(times.values())
    return {stage: seconds * 1000 for stage, seconds in times.items()} | {"total": total * 1000}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--provider", choices=PROVIDERS, default="cpu")
    parser.add_argument("images", type=Path, nargs="+")
    args = parser.parse_args()
    from demo.captioner import Captioner

    captioner = Captioner(args.bundle, provider=args.provider, variant=args.variant)
    greedy, beam = captioner.options(1), captioner.options(3)
    rows = [caption_file(captioner, args.images[0], greedy, beam)]
    print("first-caption", flush=True)
    rows += [caption_file(captioner, path, greedy, beam) for path in args.images[1:]]
    print(json.dumps({"ms": rows[1:], "first_ms": rows[0], "peak_rss_mib": peak_rss_mib(),
                      "provider": captioner.provider,
                      "tensorflow_loaded": "tensorflow" in sys.modules}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
