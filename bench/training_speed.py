"""Seconds per training epoch: our whole-sequence recipe against the seed's one-sample-per-prefix recipe.

Ours (train/model.py, train/fit.py): one sample per caption, `<start> w1 .. wn`
-> `w1 .. wn <end>` with teacher forcing over the whole sequence and a masked
loss, so the LSTM runs over each caption once per epoch; fit's batches
(`train.sequences.epoch_order`) are cut to their longest caption. A third side,
`full_width`, is shuffled batches at the full width T, to show what cutting the
padding saves.

The seed's: every caption expanded into one sample per prefix, `[<start>, w1 ..
wi]` -> `w(i+1)`, `<end>` included, left-padded (Keras' `pad_sequences`
default) to its longest caption counted with `<start>` and `<end>` (21 for the
synthetic captions, whose longest has 19 words), as the seed padded. Ours runs
at the product's width: T = max_length + 1 (31) before the cut, the batch's
longest caption after. The LSTM re-runs over every padded prefix and only its
last output is used, so an epoch holds ~n+1 (~12) times as many samples, each
only slightly cheaper than one of ours (one output position instead of T). That recipe lives here only, as the
baseline: nothing trains with it.

Both sides see the same synthetic captions, the same E/H/V/dropout, batch 64
and the same optimiser (Adam with clipnorm, as train/fit.py compiles it), so
the only difference is the sample layout. Both are fed from in-memory numpy
batches (the seed used a Python generator, which would only add cost on its
side): the ratio isolates the recipes' compute. Running the seed's ~12x larger
epoch in full would take minutes, so each side times a fixed number of steps
after a warm-up step (tracing excluded) and seconds per epoch are extrapolated
as samples per epoch x seconds per sample.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.effort import pick
from bench.timing import interleaved
from demo.text import tokenize
from demo.vocab import Vocabulary, build_vocabulary
from train.config import FitConfig, PrepareConfig
from train.datasets.synthetic import make_example
from train.encoder import FEATURE_DIM
from train.model import ModelSpec, build_training_model
from train.sequences import CaptionSequences, epoch_order, sample_lengths
from train.tf_import import import_keras

TARGET_RATIO = 20.0


@dataclass(frozen=True)
class PrefixSamples:
    """The seed's layout: one row per (caption, prefix)."""

    rows: np.ndarray  # (P,) image of each prefix
    prefixes: np.ndarray  # (P, T) int32, left-padded with 0
    next_words: np.ndarray  # (P,) int32

    def __len__(self) -> int:
        return len(self.rows)


def synthetic_captions(num_images: int, seed: int = 0) -> tuple[list[int], list[list[str]]]:
    """Tokenised captions of the project's synthetic scenes and the image each belongs to."""
    rows, captions = [], []
    for index in range(num_images):
        for caption in make_example(seed, index)[1]:
            rows.append(index)
            captions.append(tokenize(caption))
    return rows, captions


def whole_sequences(vocab: Vocabulary, rows: list[int], captions: list[list[str]]) -> CaptionSequences:
    """Our layout, encoded exactly as train.sequences.caption_sequences does (T = max_length + 1)."""
    width = vocab.max_length + 2
    encoded = [vocab.encode(words) for words in captions]
    array = np.asarray([ids + [vocab.pad_id] * (width - len(ids)) for ids in encoded], dtype=np.int32)
    return CaptionSequences(np.asarray(rows, dtype=np.int64), array[:, :-1], array[:, 1:].copy())


def prefix_samples(sequences: CaptionSequences, pad_id: int = 0) -> PrefixSamples:
    """Expand each caption into its prefixes, left-padded to the longest caption with `<start>` and `<end>`."""
    rows, prefixes, next_words = [], [], []
    for row, inputs, targets in zip(sequences.rows, sequences.inputs, sequences.targets):
        for step in np.flatnonzero(targets != pad_id):
            rows.append(row)
            prefixes.append(inputs[: step + 1])
            next_words.append(targets[step])
    width = int(sample_lengths(sequences).max()) + 1
    padded = np.full((len(prefixes), width), pad_id, dtype=np.int32)
    for i, prefix in enumerate(prefixes):
        padded[i, width - len(prefix):] = prefix
    return PrefixSamples(np.asarray(rows, dtype=np.int64), padded, np.asarray(next_words, dtype=np.int32))


def build_seed_model(vocab_size: int, embed_dim: int, hidden_dim: int, dropout: float):
    """The seed's merge captioner: the LSTM's last output only, a softmax over the next word."""
    keras = import_keras()
    layers = keras.layers
    features = keras.Input((FEATURE_DIM,), name="features")
    prefix = keras.Input((None,), dtype="int32", name="prefix")
    image = layers.Dropout(dropout)(features)
    image = layers.Dense(hidden_dim, activation="relu")(image)
    words = layers.Embedding(vocab_size, embed_dim, mask_zero=True)(prefix)
    words = layers.Dropout(dropout)(words)
    last = layers.LSTM(hidden_dim, return_sequences=False)(words)
    hidden = layers.Dense(hidden_dim, activation="relu")(layers.Add()([image, last]))
    probs = layers.Dense(vocab_size, activation="softmax")(hidden)
    return keras.Model([features, prefix], probs, name="seed_captioner")


def _optimizer(learning_rate: float):
    return import_keras().optimizers.Adam(learning_rate, clipnorm=5.0)  # as train/fit.py


def _compiled_ours(vocab: Vocabulary, embed_dim: int, hidden_dim: int, dropout: float, learning_rate: float):
    keras = import_keras()
    keras.utils.set_random_seed(0)
    ours = build_training_model(ModelSpec(len(vocab), embed_dim, hidden_dim, dropout))
    ours.compile(optimizer=_optimizer(learning_rate),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=vocab.pad_id))
    return ours


def _compiled_models(vocab: Vocabulary, embed_dim: int, hidden_dim: int, dropout: float, learning_rate: float):
    keras = import_keras()
    ours = _compiled_ours(vocab, embed_dim, hidden_dim, dropout, learning_rate)
    seed = build_seed_model(len(vocab), embed_dim, hidden_dim, dropout)
    seed.compile(optimizer=_optimizer(learning_rate), loss=keras.losses.SparseCategoricalCrossentropy())
    return ours, seed


def _batches(features: np.ndarray, rows: np.ndarray, words: np.ndarray, targets: np.ndarray, word_input: str,
             batch_size: int, steps: int, rng: np.random.Generator) -> list[tuple[dict, np.ndarray]]:
    """`steps` full batches of random samples, gathered up front so the timed loop is training only."""
    picked = rng.permutation(len(rows))[: batch_size * steps].reshape(steps, batch_size)
    return [({"features": features[rows[p]], word_input: words[p]}, targets[p]) for p in picked]


def _cut_batches(features: np.ndarray, data: CaptionSequences, batch_size: int, steps: int,
                 window: int) -> list[tuple[dict, np.ndarray]]:
    """The first `steps` batches of fit's first epoch (with `window` > 1 sorted by length within runs of that
    many), each cut to its longest caption as `train.sequences.make_dataset` cuts it."""
    lengths = sample_lengths(data)
    order = epoch_order(0, 0, lengths, batch_size, window)[: batch_size * steps].reshape(steps, batch_size)
    batches = []
    for picked in order:
        width = int(lengths[picked].max())
        batches.append(({"features": features[data.rows[picked]], "words": data.inputs[picked, :width]},
                        data.targets[picked, :width]))
    return batches


def _trainer(model, batches: list[tuple[dict, np.ndarray]]) -> Callable[[], int]:
    """Warm up (trace) on every width the batches have, then return a callable that trains on every batch and
    counts samples."""
    one_of_each_shape = {tuple(x.shape for x in inputs.values()): (inputs, targets) for inputs, targets in batches}
    for inputs, targets in one_of_each_shape.values():
        model.train_on_batch(inputs, targets)

    def run() -> int:
        for inputs, targets in batches:
            model.train_on_batch(inputs, targets)
        return sum(len(targets) for _, targets in batches)

    return run


def measure(effort: str = "full", batch_size: int = 64) -> dict:
    cfg = FitConfig()
    num_images, steps = pick(effort, (64, 3), (200, 10), (600, 30))
    rows, captions = synthetic_captions(num_images)
    vocab, _ = build_vocabulary(captions, min_count=1, max_length=PrepareConfig().max_length)
    ours_data = whole_sequences(vocab, rows, captions)
    seed_data = prefix_samples(ours_data, vocab.pad_id)
    steps = min(steps, len(ours_data) // batch_size)  # full batches only: one traced shape per model
    rng = np.random.default_rng(0)
    features = rng.random((num_images, FEATURE_DIM), dtype=np.float32)  # values do not change the cost
    ours_model, seed_model = _compiled_models(vocab, cfg.embed_dim, cfg.hidden_dim, cfg.dropout, cfg.learning_rate)
    full_model = _compiled_ours(vocab, cfg.embed_dim, cfg.hidden_dim, cfg.dropout, cfg.learning_rate)
    sides = {
        "ours": _trainer(ours_model, _cut_batches(features, ours_data, batch_size, steps, cfg.bucket_window)),
        "full_width": _trainer(full_model, _batches(features, ours_data.rows, ours_data.inputs, ours_data.targets,
                                                    "words", batch_size, steps, rng)),
        "seed": _trainer(seed_model, _batches(features, seed_data.rows, seed_data.prefixes, seed_data.next_words,
                                              "prefix", batch_size, steps, rng)),
    }
    rates = interleaved(sides, repeats=pick(effort, 1, 2, 3))
    samples = {"ours": len(ours_data), "full_width": len(ours_data), "seed": len(seed_data)}
    return {
        "name": "training_speed",
        "batch_size": batch_size,
        "model": {"embed_dim": cfg.embed_dim, "hidden_dim": cfg.hidden_dim, "vocab_size": len(vocab),
                  "dropout": cfg.dropout},
        "images": num_images,
        "captions": len(ours_data),
        "sequence_length": {"full_width": int(ours_data.inputs.shape[1]), "seed": int(seed_data.prefixes.shape[1])},
        "bucket_window": cfg.bucket_window,
        "steps_timed": steps,
        "samples_per_epoch": samples,
        "samples_per_s": rates,
        **epoch_comparison(samples, rates),
    }


FLICKR_TARGET = 0.5  # seconds per epoch with the padding cut / at full width, Flickr-scale decoder
BY_LENGTH_WINDOW = 32  # `fit --bucket-window` for the by-length side: batches of nearly one length


def measure_flickr_scale(captions_path: Path, effort: str = "full", batch_size: int = 64) -> dict:
    """Seconds per epoch of the Flickr-scale decoder (the real captions' vocabulary and lengths, V in the
    thousands, so the output layer dominates): fit's default batches with the padding cut, and batches sorted by
    length (`--bucket-window 32`), against shuffled batches at the full width T = max_length + 1 (the recipe
    before the cut). Features are random: their values do not change the cost."""
    from bench.flickr_scale_model import load_captions  # lazy: only this side reads a captions file

    cfg, prepare = FitConfig(), PrepareConfig()
    rows, captions = [], []
    for index, image in enumerate(load_captions(captions_path).images):
        for caption in image.captions:
            rows.append(index)
            captions.append(tokenize(caption)[: prepare.max_length])
    vocab, _ = build_vocabulary(captions, min_count=1, max_length=prepare.max_length)
    data = whole_sequences(vocab, rows, captions)
    steps = pick(effort, 2, 5, 15)
    features = np.random.default_rng(0).random((rows[-1] + 1, FEATURE_DIM), dtype=np.float32)
    cut_model, full_model, sorted_model = (
        _compiled_ours(vocab, cfg.embed_dim, cfg.hidden_dim, cfg.dropout, cfg.learning_rate) for _ in range(3))
    sides = {"cut": _trainer(cut_model, _cut_batches(features, data, batch_size, steps, cfg.bucket_window)),
             "by_length": _trainer(sorted_model, _cut_batches(features, data, batch_size, steps, BY_LENGTH_WINDOW)),
             "full_width": _trainer(full_model, _batches(features, data.rows, data.inputs, data.targets, "words",
                                                         batch_size, steps, np.random.default_rng(0)))}
    rates = interleaved(sides, repeats=pick(effort, 1, 2, 3))
    epoch_s = {side: len(data) / rates[side]["median_per_s"] for side in sides}
    ratio = epoch_s["cut"] / epoch_s["full_width"]
    by_length = epoch_s["by_length"] / epoch_s["full_width"]
    return {"name": "training_flickr_scale", "captions_file": captions_path.name, "batch_size": batch_size,
            "vocab_size": len(vocab), "captions": len(data), "mean_positions": float(sample_lengths(data).mean()),
            "full_width": int(data.inputs.shape[1]), "bucket_window": cfg.bucket_window, "steps_timed": steps,
            "samples_per_s": rates, "seconds_per_epoch": epoch_s, "ratio_cut_to_full_width": ratio,
            "ratio_by_length_to_full_width": by_length, "by_length_window": BY_LENGTH_WINDOW,
            "target": {"ratio_at_most": FLICKR_TARGET, "met": ratio <= FLICKR_TARGET}}


def epoch_comparison(samples: dict[str, int], rates: dict[str, dict]) -> dict:
    """Seconds per epoch of each recipe (its samples per epoch at its measured rate), how many times longer
    the seed's epoch (and the full-width one) takes than ours, and whether the seed's is at least TARGET_RATIO."""
    epoch_s = {name: samples[name] / rates[name]["median_per_s"] for name in samples}
    ratio = epoch_s["seed"] / epoch_s["ours"]
    extra = {"ratio_full_width_to_ours": epoch_s["full_width"] / epoch_s["ours"]} if "full_width" in epoch_s else {}
    return {"seconds_per_epoch": epoch_s, "ratio_seed_to_ours": ratio, **extra,
            "target": {"ratio_at_least": TARGET_RATIO, "met": ratio >= TARGET_RATIO}}
