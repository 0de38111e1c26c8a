"""A trained Flickr-scale decoder to measure decoding on, built from real captions without images.

`python -m bench.flickr_scale_model --captions PATH --out RUN` writes a real run folder (the files
`python -m train prepare` writes, a feature cache, `model.keras`, `metrics.json`, a decoder-only int8
bundle) for the project's own model at Flickr's vocabulary size (8,493 tokens for Flickr8k at
min-count 1: every word of every caption, test captions included). Decoding cost depends on V and H,
but also on when captions end: a model with random weights never says `<end>`, so every caption runs
to the length limit. This one is trained, so it is confident and ends its own captions, as a real
captioner does.

There are no images: each image's "features" are a STAND-IN, a seeded random projection of the bag of
words of its own captions (tf-idf weighted, plus seeded noise, ReLU, float16, 4096 wide like fc2), so
they carry what the captions say. The cache's `weights` identity says so
(`stand-in: bag-of-words projection v1, seed 0`): `load_cache` trains and evaluates on it, and
`train.run_features.run_encoder_spec` refuses it, so no VGG16 encoder is ever exported for it.

Each stage is skipped when its output exists (as in `python -m pipeline`), so a second call returns in
seconds without importing TensorFlow; a call with other options than those the run was built with is
refused. Run as a child process by the decoding benchmark, so TensorFlow never runs in the process that
times ONNX Runtime.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.stand_in_cache import write_complete_cache
from demo.artifacts import atomic_write_json, read_json
from demo.bundle_layout import MANIFEST
from demo.errors import EXIT_CODES_HELP, EXIT_OK, BadInput, CaptionerError, MissingFile, run_command
from demo.generation import COMPARED, GENERATION
from demo.logs import configure_cli_logging
from export.config import ExportConfig
from train.captions_file import read_captions
from train.config import EvaluateConfig, FitConfig, PrepareConfig, add_arguments, from_args, option, to_json
from train.datasets import flickr8k, flickr30k
from train.datasets.records import SPLITS, LoadedDataset
from train.encoder import FEATURE_DIM
from train.feature_cache import STAND_IN_PREFIX, cache_paths
from train.prepare import write_prepared
from train.run_files import RunFiles, update_run_config

log = logging.getLogger("bench.flickr_scale_model")  # not __name__: run as __main__

STAND_IN = "bag-of-words projection v1"  # bump when the features below change: the cache identity follows
NOISE = 0.5  # std of the per-image noise; the bag-of-words signal has std ~1 per feature before ReLU
FC2_SCALE = 2.0  # mean ~0.8 and ~half zeros after ReLU, near VGG16 fc2 on photos (the model divides by the RMS)
CONFIG_SECTION = "flickr_scale"
REPORT = "flickr_scale_report.json"
DEFAULT_RUN = Path("models/flickr-scale")  # where the decoding benchmark keeps it (models/ is never committed)


class CaptionsUnreadable(CaptionerError, ValueError):
    """The captions file parsed to no caption at all: neither Flickr8k's nor Flickr30K's format."""


class RunBuiltOtherwise(CaptionerError, ValueError):
    """The run folder exists but was built with other options: reusing it would measure another model."""


@dataclass
class ScaleModelConfig:
    captions: Path = option(Path("Flickr8k.token.txt"), "captions file: Flickr8k's `Flickr8k.token.txt` "
                                                        "(IMAGE.jpg#N<TAB>caption) or Flickr30K's `results.csv` "
                                                        "(image_name| comment_number| comment)")
    out: Path = option(DEFAULT_RUN, "run folder to build, or to reuse when it is complete")
    num_images: int | None = option(None, "use only the first N images of the file (default: all)")
    min_count: int = option(1, "keep words seen at least this often, counted over all captions (not only "
                               "training ones: the benchmark wants the dataset's whole vocabulary)")
    embed_dim: int = option(256, "word embedding size E")
    hidden_dim: int = option(256, "LSTM size H")
    epochs: int = option(1, "epochs to train: one is ~9 min at full Flickr8k scale on 2 cores (the logits over "
                             "V=8.5k words dominate) and already gives a decoder that ends 96%% of its captions")
    batch_size: int = option(64, "captions per training step")
    learning_rate: float = option(1e-3, "Adam's initial learning rate")
    seed: int = option(0, "seed of the splits, the stand-in features and training")


def stand_in_weights(seed: int) -> str:
    """The cache's `weights` identity: says plainly that no VGG16 made these features."""
    return f"{STAND_IN_PREFIX} {STAND_IN}, seed {seed}"


# ---- captions -------------------------------------------------------------------------------------------


def load_captions(path: Path) -> LoadedDataset:
    """Parse Flickr30K's `results.csv` (by its `.csv` suffix) or a Flickr8k token file, with their loaders.

    `image_root` is where the dataset would keep its images beside the file; the folder need not
    exist: this model is built from captions alone.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"--captions {path}: no such file (Flickr8k.token.txt or Flickr30K's results.csv)")
    folder = path.parent.resolve()
    if path.suffix.lower() == ".csv":
        dataset = flickr30k.load_results_file(path, flickr30k.resolve_image_root(folder))
    else:
        dataset = flickr8k.load_token_file(path, folder / flickr8k.IMAGE_DIRS[0])
    if not dataset.images:
        problems = dataset.issues.to_json()
        example = next((p["examples"][0] for p in problems.values() if p["examples"]), "no caption lines")
        raise CaptionsUnreadable(
            f"--captions {path}: no caption could be read from {dataset.lines_read} lines (e.g. {example}). "
            "Expected Flickr8k's token file (IMAGE.jpg#N<TAB>caption) or, named *.csv, Flickr30K's results.csv "
            "(image_name| comment_number| comment)")
    return dataset


def prepare(cfg: ScaleModelConfig) -> str:
    """captions.json, splits.json, vocab.json and prepare_report.json, by `train.prepare`'s own writer."""
    dataset = load_captions(cfg.captions)
    images = dataset.images[: cfg.num_images] if cfg.num_images else dataset.images
    prepare_cfg = PrepareConfig(run=cfg.out, dataset=dataset.name, data_dir=Path(cfg.captions).parent,
                                num_images=len(images), min_count=cfg.min_count, seed=cfg.seed)
    report = write_prepared(prepare_cfg, dataset, images, vocabulary_splits=SPLITS)
    return f"{report['images_kept']} images, {report['captions_kept']} captions, vocabulary " \
           f"{report['vocabulary']['size']}"


# ---- stand-in features ----------------------------------------------------------------------------------


def word_vector(word: str, seed: int) -> np.ndarray:
    """A fixed Gaussian direction per word, from the seed and the word itself (not its vocabulary id).

    Keyed by the word, so the features do not depend on --min-count and words unseen in training
    still move their image's features.
    """
    key = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
    return np.random.default_rng([seed, key]).standard_normal(FEATURE_DIM, dtype=np.float32)


def stand_in_features(documents: list[list[str]], seed: int) -> np.ndarray:
    """(N, 4096) float32 non-negative features: tf-idf projection of each document, noise, ReLU, fc2-like scale.

    tf-idf keeps "a" and "the" from drowning the words that tell images apart; the projection has unit
    norm, so before the noise each feature has std ~1.
    """
    counts = [Counter(words) for words in documents]
    df = Counter(word for c in counts for word in c)
    idf = {word: np.log((1 + len(counts)) / (1 + n)) + 1.0 for word, n in df.items()}
    vectors = {word: word_vector(word, seed) for word in sorted(df)}
    noise = np.random.default_rng([seed, len(counts)])
    features = np.empty((len(counts), FEATURE_DIM), dtype=np.float32)
    for row, c in enumerate(counts):
        words = sorted(c)
        weights = np.array([c[w] * idf[w] for w in words], dtype=np.float32)
        weights /= max(float(np.linalg.norm(weights)), 1e-12)
        signal = weights @ np.stack([vectors[w] for w in words]) if words else 0.0
        features[row] = signal + noise.normal(0.0, NOISE, FEATURE_DIM).astype(np.float32)
    return FC2_SCALE * np.maximum(features, 0.0)


def features(cfg: ScaleModelConfig) -> str:
    """The run's feature cache, in the real cache format, holding stand-in features."""
    files = RunFiles(Path(cfg.out))
    captions = read_captions(files.captions)
    documents = [[word for tokens in entry.tokens for word in tokens.split()] for entry in captions.images]
    weights = stand_in_weights(cfg.seed)
    cache = write_complete_cache(files, stand_in_features(documents, cfg.seed), weights)
    update_run_config(files, "features", {"stand_in": weights, "noise": NOISE, "scale": FC2_SCALE,
                                          "seed": cfg.seed})
    return f"{len(cache.rows)} images, weights {weights!r}"


# ---- training, evaluation, report, export ---------------------------------------------------------------


def fit(cfg: ScaleModelConfig) -> str:
    from train.fit import run_fit  # lazy: imports TensorFlow, which a second, all-reused build never needs

    started = time.perf_counter()
    run_fit(FitConfig(run=cfg.out, epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                      embed_dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim, seed=cfg.seed))
    state = read_json(RunFiles(Path(cfg.out)).train_state, "training state")
    per_epoch = (time.perf_counter() - started) / max(1, state["epochs_done"])
    return f"{state['epochs_done']} epochs (~{per_epoch:.0f} s each), best validation loss " \
           f"{state['best_val_loss']:.4f}"


def evaluate(cfg: ScaleModelConfig) -> str:
    from train.evaluate import run_evaluate  # lazy: imports the Keras step model

    metrics = run_evaluate(EvaluateConfig(run=cfg.out, beam=[GENERATION.num_beams, COMPARED.num_beams]))
    return ", ".join(f"{k} BLEU-4 {v['bleu_4']:.3f}" for k, v in metrics.items())


def report(cfg: ScaleModelConfig, seconds: dict[str, float]) -> str:
    """flickr_scale_report.json: what the benchmark's premise rests on (a confident, trained decoder)."""
    files = RunFiles(Path(cfg.out))
    metrics = read_json(files.metrics, "metrics")
    state = read_json(files.train_state, "training state")
    prepared = read_json(files.prepare_report, "prepare report")
    # what the benchmark's premise rests on: captions of natural length, ended by the model itself
    ended = {key: {"images": entry["images"], "mean_length_words": entry["mean_words"],
                   "ended_by_end_share": entry["ended_by_end_share"], "max_length": entry["max_length"]}
             for key, entry in metrics.items()}
    greedy = ended["greedy"]
    result = {
        "options": _options_json(cfg),
        "features": stand_in_weights(cfg.seed),
        "vocab_size": prepared["vocabulary"]["size"],
        "images": prepared["splits"],
        "epochs_done": state["epochs_done"],
        "best_val_loss": state["best_val_loss"],
        "bleu_4": {key: round(entry["bleu_4"], 4) for key, entry in metrics.items()},
        "bleu_4_shuffled_references": {key: round(entry["bleu_4_shuffled_references"], 4)
                                       for key, entry in metrics.items()},
        "captions": ended,
        "stage_seconds": seconds,  # of the call that built the run; stages it reused are absent
    }
    atomic_write_json(files.root / REPORT, result)
    return f"greedy: mean {greedy['mean_length_words']} words, {greedy['ended_by_end_share']:.1%} ended by <end>; " \
           + ", ".join(f"{k} BLEU-4 {v:.3f}" for k, v in result["bleu_4"].items())


def export(cfg: ScaleModelConfig) -> str:
    from export.bundle import run_export  # lazy: the export's imports are needed only when it runs

    manifest = run_export(ExportConfig(run=cfg.out, decoder_only=True, quantize="int8"))
    return f"{len(manifest['files'])} files in {RunFiles(Path(cfg.out)).bundle}"


# ---- the build ------------------------------------------------------------------------------------------


def _options_json(cfg: ScaleModelConfig) -> dict:
    """The options that make the model, as recorded in config.json (the output folder is not one)."""
    values = to_json(cfg)
    values.pop("out")
    values["captions"] = str(Path(cfg.captions).resolve())
    return values


def check_same_options(cfg: ScaleModelConfig) -> None:
    """Refuse to reuse a run built with other options: its stages would be skipped and the model differ."""
    files = RunFiles(Path(cfg.out))
    if not files.config.is_file():
        return
    recorded = read_json(files.config, "run config").get(CONFIG_SECTION)
    wanted = _options_json(cfg)
    if recorded is not None and recorded != wanted:
        changed = ", ".join(f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in wanted.items() if recorded.get(k) != v)
        raise RunBuiltOtherwise(f"{files.root} was built with other options ({changed}): pass another --out, or "
                                "delete the folder to rebuild it")


def _done(path: Path, key: str | None = None) -> bool:
    if not path.is_file():
        return False
    return key is None or bool(read_json(path, path.name).get(key))


def build(cfg: ScaleModelConfig) -> Path:
    """Every stage in order, each skipped when its output exists; returns the run folder."""
    files = RunFiles(Path(cfg.out))
    check_same_options(cfg)
    files.root.mkdir(parents=True, exist_ok=True)
    update_run_config(files, CONFIG_SECTION, _options_json(cfg))
    seconds: dict[str, float] = {}
    stages: list[tuple[str, bool, Callable[[], str]]] = [
        ("prepare", _done(files.captions), lambda: prepare(cfg)),
        ("features", _done(cache_paths(files)["meta"], "complete"), lambda: features(cfg)),
        ("fit", _done(files.model) and _done(files.train_state), lambda: fit(cfg)),
        ("evaluate", _done(files.metrics), lambda: evaluate(cfg)),
        ("report", _done(files.root / REPORT), lambda: report(cfg, seconds)),
        ("export", _done(files.bundle / MANIFEST), lambda: export(cfg)),
    ]
    for name, skip, work in stages:
        if skip:
            log.info("[%s] already done, reusing it", name)
            continue
        started = time.perf_counter()
        summary = work()
        seconds[name] = round(time.perf_counter() - started, 1)
        log.info("[%s] %s (%.0f s)", name, summary, seconds[name])
    return files.root


def ensure_built(run: Path, captions: Path | None) -> dict | None:
    """The run's report, building the run first (in a child process: TensorFlow) when it has no bundle.

    None when there is no bundle and no captions file to build one from.
    """
    files = RunFiles(Path(run))
    if not _done(files.bundle / MANIFEST):
        if captions is None:
            return None
        command = [sys.executable, "-m", "bench.flickr_scale_model", "--captions", str(captions), "--out", str(run)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"building the Flickr-scale decoder failed: {result.stderr.strip()[-2000:]}")
    return read_json(files.root / REPORT, "Flickr-scale report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.flickr_scale_model", description=__doc__.splitlines()[0],
                                     epilog=EXIT_CODES_HELP)
    fields = {f.name: f for f in dataclasses.fields(ScaleModelConfig)}
    parser.add_argument("--captions", type=Path, required=True, help=fields["captions"].metadata["help"])
    parser.add_argument("--out", type=Path, required=True, help=fields["out"].metadata["help"])
    add_arguments(parser, ScaleModelConfig, skip=("captions", "out"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    cfg = from_args(ScaleModelConfig, args)

    def command() -> int:
        if cfg.num_images is not None and cfg.num_images < 1:
            raise BadInput(f"--num-images {cfg.num_images}: give a positive number of images, or omit it")
        build(cfg)
        return EXIT_OK

    return run_command(command)


if __name__ == "__main__":
    sys.exit(main())
