"""One captioning process, as a deployment runs it: TF-free, bundle loaded once, image files in, captions out.

Run by `bench.end_to_end` once per encoder variant, so each process's peak
RSS is that variant's alone. Each image goes through what one web request
does, by the same function (`Captioner.compare`: decode and resize, one
encoder pass, greedy and beam on the same features); the per-stage times come back as JSON on stdout, after a
`first-caption` line the parent uses to time the cold start.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.machine import peak_rss_mib
from demo.captioner import Captioner
from demo.sessions import PROVIDERS


def caption_file(captioner: Captioner, path: Path) -> dict[str, float]:
    """One request as the app serves it (`Captioner.compare`: one encoder pass, greedy and beam), in ms."""
    started = time.perf_counter()
    found = captioner.compare(path)
    total = (time.perf_counter() - started) * 1000
    stages = found.beam.timings
    return {"preprocess": stages["preprocess_ms_per_image"], "encoder": stages["encoder_ms_per_image"],
            "greedy": found.greedy.timings["decoder_ms_per_image"], "beam3": stages["decoder_ms_per_image"],
            "total": total}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--provider", choices=PROVIDERS, default="cpu")
    parser.add_argument("images", type=Path, nargs="+")
    args = parser.parse_args()
    captioner = Captioner(args.bundle, provider=args.provider, variant=args.variant)
    rows = [caption_file(captioner, args.images[0])]
    print("first-caption", flush=True)
    rows += [caption_file(captioner, path) for path in args.images[1:]]
    print(json.dumps({"ms": rows[1:], "first_ms": rows[0], "peak_rss_mib": peak_rss_mib(),
                      "provider": captioner.provider,
                      "tensorflow_loaded": "tensorflow" in sys.modules}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
