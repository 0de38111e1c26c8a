"""`python -m bench`: measure every speed and memory claim as ratios taken in one run.

Writes results.json (numbers, machine and library versions), results.md (the
table, with targets) and latency_per_stage.png into --out. Each benchmark
runs in a fresh process; both sides of each comparison run in that process,
interleaved, several times, and the median and spread are reported.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.isolated import run_isolated
from bench.machine import machine_info
from bench.plot import plot_stages
from bench.report import markdown
from demo.artifacts import atomic_write_bytes, atomic_write_json
from demo.bundle_layout import DEFAULT_RUN
from demo.sessions import PROVIDERS

BENCHMARKS = ("features", "calibration", "training", "encoder", "decoding", "end_to_end", "serving", "folder",
              "explanations", "ray", "export", "multiworker")
QUICK_SKIPS = ("export", "multiworker", "ray")  # minutes each on their own: --quick and --smoke leave them to --only


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    effort = parser.add_mutually_exclusive_group()
    effort.add_argument("--quick", dest="effort", action="store_const", const="quick", default="full",
                        help="fewer images and repetitions, no export or multiworker: a look in a few minutes")
    effort.add_argument("--smoke", dest="effort", action="store_const", const="smoke",
                        help="as --quick, one round on a few images: checks that each benchmark runs and reports "
                             "(what the test suite runs; its numbers mean nothing)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="output folder (default: %(default)s)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=None,
                        help="run only these benchmarks (default: all; --quick and --smoke leave out export and "
                             "multiworker)")
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN,
                        help="trained run with an int8 bundle (`make demo` builds it); benchmarks that need it "
                             "say 'skipped' without it (default: %(default)s)")
    parser.add_argument("--provider", choices=PROVIDERS, default="cpu",
                        help="ONNX Runtime provider for the decoding, end-to-end and folder benchmarks "
                             "(default: %(default)s; cuda on a GPU machine, as `make gpu-check` does)")
    parser.add_argument("--flickr-run", type=Path, default=Path("models/flickr-scale"),
                        help="the Flickr-scale decoder's run (full runs only); built there from --flickr-captions "
                             "when it has no bundle, which takes about 10 minutes (default: %(default)s)")
    parser.add_argument("--flickr-captions", type=Path, default=None,
                        help="captions to build the Flickr-scale decoder from: Flickr8k.token.txt or a Flickr30K "
                             "results.csv (default: data/flickr8k/Flickr8k.token.txt when present)")
    args = parser.parse_args(argv)
    default_captions = Path("data/flickr8k/Flickr8k.token.txt")
    if args.flickr_captions is None and default_captions.is_file():
        args.flickr_captions = default_captions
    return args


def selected(args: argparse.Namespace) -> list[str]:
    if args.only:
        return list(args.only)
    return [b for b in BENCHMARKS if not (args.effort != "full" and b in QUICK_SKIPS)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    started = time.time()
    results = {"command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
               "effort": args.effort, "machine": machine_info(), "benchmarks": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in selected(args):
        print(f"bench: {name} ...", end=" ", flush=True, file=sys.stderr)  # stdout: the table alone
        begun = time.time()
        entries = run_isolated(name, args, args.out / f".{name}.json")
        (args.out / f".{name}.json").unlink(missing_ok=True)
        results["benchmarks"].extend(entries)
        state = "failed" if any("failed" in e for e in entries) else "skipped" if all("skipped" in e for e in entries) \
            else "done"
        print(f"{state} in {time.time() - begun:.0f} s", flush=True, file=sys.stderr)
        for entry in entries:
            if "failed" in entry:  # the table says only "failed"; the reason belongs where the user is looking
                print(f"bench: {entry['name']} failed:\n{entry['failed']}", flush=True, file=sys.stderr)
    results["seconds"] = round(time.time() - started, 1)
    atomic_write_json(args.out / "results.json", results)
    table = markdown(results)
    atomic_write_bytes(args.out / "results.md", table.encode("utf-8"))
    plot = plot_stages(results, args.out / "latency_per_stage.png")
    print(table)
    print(f"results: {args.out / 'results.json'}" + (f", plot: {plot}" if plot else ""), file=sys.stderr)
    return 1 if any("failed" in e for e in results["benchmarks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
