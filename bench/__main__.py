"""`python -m bench`: run the benchmarks, write results.json and results.md."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from demo.artifacts import atomic_write_bytes, atomic_write_json

BENCHMARKS = ("features", "training", "encoder", "decoding", "export")
QUICK_SKIPS = ("export",)  # over a minute on its own: run it with --only export


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer images and repetitions (CI smoke run)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="output folder")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=None,
                        help="run only these benchmarks (default: all; --quick leaves out export)")
    parser.add_argument("--run", type=Path, default=Path("models/default"),
                        help="trained run whose bundle and model the encoder and export benchmarks use")
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
        elif entry.get("skipped") or entry.get("failed"):
            lines.append(f"| {entry['name']} | not measured: {entry.get('skipped') or 'failed'} | | | |")
        elif entry["name"] == "encoder_latency":
            lines.extend(_encoder_rows(entry))
        elif entry["name"] == "export":
            lines.extend(_export_rows(entry))
        elif entry["name"] in ("decoding", "decoding_flickr_scale"):
            lines.extend(_decoding_rows(entry))
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


def _encoder_rows(entry: dict) -> list[str]:
    sizes = entry["bytes"]
    lines = [f"| encoder (ONNX Runtime) | file MB fp32 / int8 | {sizes['fp32'] / 1e6:.0f} / {sizes['int8'] / 1e6:.0f} | | |"]
    for batch, row in entry["batches"].items():
        ms = row["ms_per_image"]
        lines.append(f"| | batch {batch}: ms per image fp32 / int8 | {ms['fp32']:.1f} / {ms['int8']:.1f} | | |")
        lines.append(f"| | batch {batch}: ratio int8 / fp32 | {row['ratio_int8_to_fp32']:.3f} "
                     f"| <= {entry['target_ratio_at_most']} | {'yes' if entry['met'][batch] else 'no'} |")
    return lines


def _export_rows(entry: dict) -> list[str]:
    met, targets = entry["met"], entry["targets"]
    return [
        f"| export (--quantize {entry['quantize']}) | wall s | {entry['seconds']:.1f} "
        f"| <= {targets['seconds_at_most']:g} (aim {targets['seconds_aim']:g}) "
        f"| {'yes' if met['seconds'] else 'no'}{' (aim too)' if met['seconds_aim'] else ''} |",
        f"| | peak RSS GiB (largest process) | {entry['peak_rss_gib']:.2f} "
        f"| <= {targets['peak_rss_gib_at_most']:g} (aim {targets['peak_rss_gib_aim']:g}) "
        f"| {'yes' if met['peak_rss'] else 'no'}{' (aim too)' if met['peak_rss_aim'] else ''} |",
        "| | stage peaks GiB | " + ", ".join(f"{k} {v:.2f}" for k, v in entry["stage_peak_rss_gib"].items())
        + " | | |",
    ]


def _decoding_rows(entry: dict) -> list[str]:
    ms, ratios, targets = entry["ms_per_caption"], entry["ratios"], entry["targets"]
    kind = "trained default run" if entry["name"] == "decoding" else "Flickr-sized, random weights"
    lines = [f"| decoding ({kind}: V={entry['vocab_size']}, H={entry['hidden_size']}, <= 20 words) | | | | |"]
    lines += [f"| | {name}: ms per caption | {value:.2f} | | |" for name, value in ms.items()]
    seed_ratio, beam_ratio = ratios["seed_loop_to_ort_greedy"], ratios["per_beam_to_batched_beam5"]
    lines.append(f"| | seed loop / ORT greedy | {seed_ratio:.0f}x | >= {targets['seed_loop_to_ort_greedy_at_least']}x "
                 f"| {'yes' if seed_ratio >= targets['seed_loop_to_ort_greedy_at_least'] else 'no'} |")
    lines.append(f"| | beam 5 per-beam calls / batched | {beam_ratio:.1f}x | >= {targets['per_beam_to_batched_at_least']}x "
                 f"| {'yes' if beam_ratio >= targets['per_beam_to_batched_at_least'] else 'no'} |")
    beam_ms = ms["ort_beam5_batched"]
    lines.append(f"| | ORT beam 5 batched ms | {beam_ms:.2f} | <= {targets['beam5_ms_at_most']} "
                 f"| {'yes' if beam_ms <= targets['beam5_ms_at_most'] else 'no'} |")
    return lines


def selected(args: argparse.Namespace) -> list[str]:
    if args.only:
        return list(args.only)
    return [b for b in BENCHMARKS if not (args.quick and b in QUICK_SKIPS)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench.machine import machine_info

    started = time.time()
    results = {"command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": machine_info(), "benchmarks": []}
    chosen = selected(args)
    if "features" in chosen:
        from bench.feature_extraction import measure

        results["benchmarks"].append(measure(quick=args.quick))
    if "training" in chosen:
        from bench.training_speed import measure as measure_training

        results["benchmarks"].append(measure_training(quick=args.quick))
    if "encoder" in chosen:
        from bench.encoder_latency import measure as measure_encoder

        results["benchmarks"].append(measure_encoder(args.run / "onnx", quick=args.quick))
    if "decoding" in chosen:
        from bench.decoding import measure as measure_decoding
        from bench.decoding import measure_flickr_scale

        results["benchmarks"].append(measure_decoding(args.run, quick=args.quick))
        results["benchmarks"].append(measure_flickr_scale(quick=args.quick))
    if "export" in chosen:
        from bench.export_cost import measure as measure_export

        results["benchmarks"].append(measure_export(args.run))
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
