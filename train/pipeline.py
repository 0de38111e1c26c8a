"""`python -m train.pipeline`: every stage from data to ONNX bundle, each skipped when its output exists.

What `make demo` runs: prepare → features → fit → evaluate → export (with int8), printing one
summary line per stage. A second run finds every output and returns in seconds without importing
TensorFlow. ImageNet weights are used when they can be had; for the synthetic dataset, offline,
the build says so in one line and uses the seeded random-init VGG16 instead (real datasets stop
instead: random features would make a useless model).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from demo.artifacts import read_json
from train.run_files import RunFiles


def _done(path: Path, key: str | None = None) -> bool:
    if not path.is_file():
        return False
    return key is None or bool(read_json(path, path.name).get(key))


def _stage(name: str, skip: bool, work) -> None:
    if skip:
        print(f"[{name}] already done, reusing it", flush=True)
        return
    started = time.perf_counter()
    summary = work()
    print(f"[{name}] {summary} ({time.perf_counter() - started:.0f} s)", flush=True)


def build(run: Path, dataset: str, data_dir: Path | None, num_images: int, epochs: int) -> Path:
    files = RunFiles(run)
    bundle = run / "onnx"

    def prepare() -> str:
        from train.config import PrepareConfig
        from train.prepare import run_prepare

        report = run_prepare(PrepareConfig(run=run, dataset=dataset, data_dir=data_dir, num_images=num_images))
        return f"{report['images_kept']} images, {report['captions_kept']} captions, vocabulary " \
               f"{report['vocabulary']['size']}"

    def features() -> str:
        from train.config import FeaturesConfig
        from train.encoder import WeightsUnavailable
        from train.features import extract_features

        try:
            cache = extract_features(FeaturesConfig(run=run, vgg_weights="imagenet"))
        except WeightsUnavailable:
            if dataset != "synthetic":
                raise
            print("[features] ImageNet weights cannot be downloaded: using a random-init VGG16, which suits the "
                  "synthetic scenes only", flush=True)
            cache = extract_features(FeaturesConfig(run=run, vgg_weights="none", overwrite=True))
        return f"{len(cache.rows)} images, weights {cache.meta['weights']}"

    def fit() -> str:
        from train.config import FitConfig
        from train.fit import run_fit

        run_fit(FitConfig(run=run, epochs=epochs))
        state = read_json(files.train_state, "training state")
        return f"{state['epochs_done']} epochs, best validation loss {state['best_val_loss']:.4f}"

    def evaluate() -> str:
        from train.config import EvaluateConfig
        from train.evaluate import run_evaluate

        metrics = run_evaluate(EvaluateConfig(run=run, beam=[1, 3]))
        return ", ".join(f"{k} BLEU-4 {v['bleu_4']:.3f}" for k, v in metrics.items())

    def export() -> str:
        from train.config import ExportConfig
        from export.bundle import run_export

        manifest = run_export(ExportConfig(run=run, quantize="int8"))
        return f"{len(manifest['files'])} files in {bundle}"

    _stage("prepare", _done(files.captions), prepare)
    _stage("features", _done(files.features_dir / "meta.json", "complete"), features)
    _stage("fit", _done(files.model) and _done(files.train_state), fit)
    _stage("evaluate", _done(files.metrics), evaluate)
    _stage("export", _done(bundle / "manifest.json"), export)
    return bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic", choices=("synthetic", "flickr8k", "flickr30k", "karpathy"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--run", type=Path, default=Path("models/default"))
    parser.add_argument("--num-images", type=int, default=3000, help="synthetic only")
    parser.add_argument("--epochs", type=int, default=15, help="most epochs to train (early stopping may stop sooner)")
    args = parser.parse_args(argv)
    from export.bundle import ExportError
    from export.parity import ParityError
    from train.__main__ import KNOWN_ERRORS

    try:
        build(args.run, args.dataset, args.data_dir, args.num_images, args.epochs)
    except (*KNOWN_ERRORS, ExportError, ParityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
