"""`python -m bench`: run the benchmarks, write results.json and results.md."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from demo.artifacts import atomic_write_bytes, atomic_write_json

BENCHMARKS = ("features", "training")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer images and repetitions (CI smoke run)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="output folder")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS),
                        help="run only these benchmarks")
    return parser.parse_args(argv)


def markdown(results: dict) -> str:
    lines = [f"# Benchmarks ({results['machine']['cpu']}, {results['machine']['cores']} cores)", "",
             "| benchmark | measure | value | target | met |", "| --- | --- | --- | --- | --- |"]
    for entry in results["benchmarks"]:
        if entry["name"] == "feature_extraction":
            rates = entry["images_per_s"]
            lines.append(f"| feature extraction (batch {entry['batch_size']}) | extract_features images/s "
                         f"| {rates['extract_features']['median_per_s']:.2f} | | |")
            lines.append(f"| | bare VGG16 forward images/s | {rates['bare_forward']['median_per_s']:.2f} | | |")
            lines.append(f"| | ratio pipeline / bare | {entry['ratio_pipeline_to_bare']:.3f} | >= 0.85 "
                         f"| {'yes' if entry['target']['met'] else 'no'} |")
        elif entry["name"] == "training_speed":
            lines.extend(_training_rows(entry))
    return "\n".join(lines) + "\n"


def _training_rows(entry: dict) -> list[str]:
    model, rates, epoch = entry["model"], entry["samples_per_s"], entry["seconds_per_epoch"]
    samples = entry["samples_per_epoch"]
    lines = [f"| training (batch {entry['batch_size']}, E={model['embed_dim']} H={model['hidden_dim']} "
             f"V={model['vocab_size']}, {entry['captions']} captions) | | | | |"]
    for side, label, unit in (("ours", "ours (whole sequence)", "captions"),
                              ("seed", "seed (one sample per prefix)", "prefixes")):
        lines.append(f"| | {label}: {unit} per epoch | {samples[side]} | | |")
        lines.append(f"| | {label}: samples/s | {rates[side]['median_per_s']:.1f} | | |")
        lines.append(f"| | {label}: s per epoch | {epoch[side]:.2f} | | |")
    lines.append(f"| | ratio seed / ours s per epoch | {entry['ratio_seed_to_ours']:.2f} "
                 f"| >= {entry['target']['ratio_at_least']:g} | {'yes' if entry['target']['met'] else 'no'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench.machine import machine_info

    started = time.time()
    results = {"command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": machine_info(), "benchmarks": []}
    if "features" in args.only:
        from bench.feature_extraction import measure

        results["benchmarks"].append(measure(quick=args.quick))
    if "training" in args.only:
        from bench.training_speed import measure as measure_training

        results["benchmarks"].append(measure_training(quick=args.quick))
    results["seconds"] = round(time.time() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", results)
    table = markdown(results)
    atomic_write_bytes(args.out / "results.md", table.encode("utf-8"))
    print(table)
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
