"""Run one benchmark in a fresh process: `python -m bench.isolated NAME --run R --effort E --json OUT`.

Each benchmark gets its own interpreter because TensorFlow, once it has run
in a process, leaves thread pools that slow ONNX Runtime there for good
(measured: 2.7x on the decoder), and memory peaks should be a benchmark's own.
Within a benchmark, both sides of every comparison still share one process.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.effort import EFFORTS
from demo.artifacts import atomic_write_json, read_json
from demo.sessions import PROVIDERS
from train.run_files import RunFiles


def _features(args: argparse.Namespace) -> list[dict]:
    from bench.feature_extraction import measure  # lazy: a child imports only the benchmark it runs

    return [measure(effort=args.effort, bundle=RunFiles(args.run).bundle)]


def _calibration(args: argparse.Namespace) -> list[dict]:
    from bench.calibration import measure  # lazy: a child imports only the benchmark it runs

    return [measure(effort=args.effort)]


def _training(args: argparse.Namespace) -> list[dict]:
    from bench.training_speed import measure, measure_flickr_scale  # lazy: a child imports only its benchmark

    if args.flickr_captions is None or args.effort == "smoke":
        return [measure(effort=args.effort)]
    return [measure(effort=args.effort), measure_flickr_scale(args.flickr_captions, effort=args.effort)]


def _encoder(args: argparse.Namespace) -> list[dict]:
    from bench.encoder_latency import measure  # lazy: a child imports only the benchmark it runs

    return [measure(RunFiles(args.run).bundle, effort=args.effort)]


def _decoding(args: argparse.Namespace) -> list[dict]:
    from bench.decoding import measure, measure_flickr_scale  # lazy: a child imports only the benchmark it runs

    if args.effort != "full":  # the Flickr-scale decoder takes minutes to build and a minute to measure
        return [measure(args.run, effort=args.effort, provider=args.provider)]
    return [measure(args.run, provider=args.provider),
            measure_flickr_scale(args.flickr_run, args.flickr_captions, provider=args.provider)]


def _end_to_end(args: argparse.Namespace) -> list[dict]:
    from bench.end_to_end import measure  # lazy: a child imports only the benchmark it runs

    return [measure(RunFiles(args.run).bundle, effort=args.effort, provider=args.provider)]


def _serving(args: argparse.Namespace) -> list[dict]:
    from bench.serving_load import measure  # lazy: a child imports only the benchmark it runs

    return [measure(args.run, effort=args.effort)]


def _export(args: argparse.Namespace) -> list[dict]:
    from bench.export_cost import measure  # lazy: a child imports only the benchmark it runs

    return [measure(args.run)]


def _folder(args: argparse.Namespace) -> list[dict]:
    from bench.folder_captioning import measure  # lazy: a child imports only the benchmark it runs

    return [measure(args.run, effort=args.effort, provider=args.provider)]


def _explanations(args: argparse.Namespace) -> list[dict]:
    from bench.explanations import measure  # lazy: a child imports only the benchmark it runs

    return [measure(args.run, effort=args.effort, provider=args.provider)]


def _ray(args: argparse.Namespace) -> list[dict]:
    from bench.ray_captioning import measure  # lazy: a child imports only the benchmark it runs

    return [measure(args.run, effort=args.effort)]


def _multiworker(args: argparse.Namespace) -> list[dict]:
    from bench.multiworker_training import measure  # lazy: a child imports only the benchmark it runs

    return [measure(args.run, effort=args.effort)]


# provider: the ONNX Runtime provider of the decoding, end-to-end, folder and explanation runtimes (the others
# measure the CPU)
RUNNERS: dict[str, Callable[[argparse.Namespace], list[dict]]] = {
    "features": _features, "calibration": _calibration, "training": _training, "encoder": _encoder,
    "decoding": _decoding, "end_to_end": _end_to_end, "serving": _serving, "export": _export, "folder": _folder,
    "explanations": _explanations, "ray": _ray, "multiworker": _multiworker,
}


def run_isolated(name: str, args: argparse.Namespace, out: Path) -> list[dict]:
    """Run benchmark `name` in a child process; a failure becomes an entry saying so, not a lost report."""
    command = [sys.executable, "-m", "bench.isolated", name, "--run", str(args.run), "--json", str(out),
               "--provider", args.provider, "--flickr-run", str(args.flickr_run)]
    command += ["--flickr-captions", str(args.flickr_captions)] if args.flickr_captions else []
    result = subprocess.run(command + ["--effort", args.effort], capture_output=True, text=True)
    if result.returncode != 0:
        return [{"name": name, "failed": (result.stderr or result.stdout).strip()[-2000:]}]
    return read_json(out, f"{name} benchmark results")["entries"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.isolated")
    parser.add_argument("name", choices=sorted(RUNNERS))
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--effort", choices=EFFORTS, default="full")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--provider", choices=PROVIDERS, default="cpu")
    parser.add_argument("--flickr-run", type=Path, required=True)
    parser.add_argument("--flickr-captions", type=Path, default=None)
    args = parser.parse_args()
    atomic_write_json(args.json, {"entries": RUNNERS[args.name](args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
