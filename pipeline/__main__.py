"""`python -m pipeline`: every stage from data to ONNX bundle, each skipped when its output exists.

What `make demo` runs: prepare → features → fit → evaluate → export (with int8), logging one
summary line per stage. A second run finds every output and returns in seconds without importing
TensorFlow. ImageNet weights are used when they can be had; for the synthetic dataset, offline,
the build says so in one line and calibrates a VGG16 on the run's training images instead
(`--vgg-weights calibrated`); real datasets stop instead and say how to choose.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from demo.artifacts import read_json
from demo.bundle_layout import MANIFEST
from demo.errors import EXIT_CODES_HELP, EXIT_OK, run_command
from demo.generation import COMPARED, GENERATION
from demo.logs import configure_cli_logging
from export.bundle import run_export
from export.config import ExportConfig
from export.feature_encoder import faster_engine, feature_encoder
from train.calibrated_vgg16 import CALIBRATED, encoder_spec
from train.config import EvaluateConfig, FeaturesConfig, FitConfig, PrepareConfig
from train.dataset_registry import NAMES as DATASET_NAMES
from train.encoder import WeightsUnavailable
from train.evaluate import run_evaluate
from train.feature_cache import cache_paths
from train.features import extract_features
from train.prepare import run_prepare
from train.run_files import RunFiles

log = logging.getLogger("pipeline")  # not __name__: run as __main__
ENGINES = ("auto", "onnx", "keras")  # the first is the default


def _done(path: Path, key: str | None = None) -> bool:
    if not path.is_file():
        return False
    return key is None or bool(read_json(path, path.name).get(key))


def _stage(name: str, skip: bool, work) -> None:
    if skip:
        log.info("[%s] already done, reusing it", name)
        return
    started = time.perf_counter()
    summary = work()
    log.info("[%s] %s (%.0f s)", name, summary, time.perf_counter() - started)


def _shape_word(search_metrics: dict) -> str:
    """The synthetic scenes' weak spot, beside BLEU: the share of shapes named right."""
    share = search_metrics.get("scene", {}).get("shape")
    return "" if share is None else f", shape word {share:.0%}"


def _extract(cfg: FeaturesConfig, engine: str):
    """The feature cache computed by `engine`: Keras' VGG16, or (onnx) the fp32 encoder graph the bundle will
    serve, built first and checked against Keras (`export.feature_encoder`)."""
    if engine == "keras":
        return extract_features(cfg)
    files = RunFiles(cfg.run)
    encoder = feature_encoder(files, encoder_spec(files, cfg.vgg_weights, cfg.seed, calibrate=True))
    if engine == "auto":
        engine, timings = faster_engine(files, encoder)
        log.info("[features] %s on this machine: ONNX Runtime %.3f s an image, Keras %.3f s, on the run's first "
                 "images", "ONNX Runtime is faster" if engine == "onnx" else "Keras is faster", timings["onnx"],
                 timings["keras"])
    return extract_features(cfg, encoder=encoder) if engine == "onnx" else extract_features(cfg)


def build(run: Path, dataset: str, data_dir: Path | None, num_images: int, epochs: int,
          vgg_weights: str | None = None, engine: str = ENGINES[0]) -> Path:
    """`vgg_weights` None: ImageNet's, with the synthetic dataset's offline fallback; any other value as given."""
    files = RunFiles(run)

    def prepare() -> str:
        report = run_prepare(PrepareConfig(run=run, dataset=dataset, data_dir=data_dir, num_images=num_images))
        return f"{report['images_kept']} images, {report['captions_kept']} captions, vocabulary " \
               f"{report['vocabulary']['size']}"

    def features() -> str:
        try:
            cache = _extract(FeaturesConfig(run=run, vgg_weights=vgg_weights or "imagenet"), engine)
        except WeightsUnavailable as exc:
            if dataset != "synthetic" or vgg_weights is not None:
                raise WeightsUnavailable(f"{exc} With make demo: VGG_WEIGHTS=PATH, VGG_WEIGHTS=calibrated or "
                                         "VGG_WEIGHTS=none (python -m pipeline --vgg-weights).") from exc
            log.warning("[features] ImageNet weights cannot be downloaded: calibrating a VGG16 on the run's own "
                        "training images instead (no ImageNet; it suits the synthetic scenes)")
            cache = _extract(FeaturesConfig(run=run, vgg_weights=CALIBRATED, overwrite=True), engine)
        assert cache is not None, "without --shard, extract_features completes the cache"
        engines = ", ".join(cache.meta.get("engines", ["keras"]))  # a cache from before engines were recorded
        return f"{len(cache.rows)} images, weights {cache.meta['weights']}, by {engines}"

    def fit() -> str:
        from train.fit import run_fit  # lazy: imports TensorFlow, which a second, all-reused run never needs

        run_fit(FitConfig(run=run, epochs=epochs))
        state = read_json(files.train_state, "training state")
        return f"{state['epochs_done']} epochs, best validation loss {state['best_val_loss']:.4f}"

    def evaluate() -> str:
        metrics = run_evaluate(EvaluateConfig(run=run, beam=[GENERATION.num_beams, COMPARED.num_beams]))
        return ", ".join(f"{k} BLEU-4 {v['bleu_4']:.3f}" + _shape_word(v) for k, v in metrics.items())

    def export() -> str:
        manifest = run_export(ExportConfig(run=run, quantize="int8"))
        return f"{len(manifest['files'])} files in {files.bundle}"

    _stage("prepare", _done(files.captions), prepare)
    _stage("features", _done(cache_paths(files)["meta"], "complete"), features)
    _stage("fit", _done(files.model) and _done(files.train_state), fit)
    _stage("evaluate", _done(files.metrics), evaluate)
    _stage("export", _done(files.bundle / MANIFEST), export)
    return files.bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0],
                                     epilog=EXIT_CODES_HELP)
    defaults = PrepareConfig()
    parser.add_argument("--dataset", default=defaults.dataset, choices=DATASET_NAMES,
                        help="dataset layout to read (default: %(default)s, generated offline)")
    parser.add_argument("--data-dir", type=Path, default=None, help="dataset folder (not for synthetic)")
    parser.add_argument("--run", type=Path, default=defaults.run, help="run folder to build (default: %(default)s)")
    parser.add_argument("--num-images", type=int, default=defaults.num_images, help="synthetic only")
    parser.add_argument("--epochs", type=int, default=FitConfig().epochs,
                        help="most epochs to train (early stopping may stop sooner; default: %(default)s)")
    parser.add_argument("--vgg-weights", default=None,
                        help="VGG16's weights: imagenet, calibrated (computed from the run's training images), none "
                             "(seeded random) or a .h5 path (default: imagenet, and offline for the synthetic "
                             "dataset, calibrated)")
    parser.add_argument("--engine", default=ENGINES[0], choices=ENGINES,
                        help="what computes the feature cache: onnx, the fp32 encoder graph the bundle serves (ONNX "
                             "Runtime, CUDA when it can), built first and checked against Keras on a few of the "
                             "run's images; keras, TensorFlow's VGG16; auto, whichever of the two computed those "
                             "images faster here (default: %(default)s)")
    args = parser.parse_args(argv)
    configure_cli_logging()

    def run() -> int:
        build(args.run, args.dataset, args.data_dir, args.num_images, args.epochs, args.vgg_weights, args.engine)
        return EXIT_OK

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())
