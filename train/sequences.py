"""Captions as whole sequences for teacher forcing, and the tf.data pipeline over the feature cache.

One sample per caption: inputs are `<start> w1 .. wn`, targets `w1 .. wn <end>`,
padded with 0, which the loss ignores. (The seed expanded every caption into
one sample per prefix and re-ran the LSTM over each: ~n times the work.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from demo.errors import BadInput
from demo.vocab import Vocabulary
from train.captions_file import read_captions
from train.run_files import RunFiles

PAD_ID = Vocabulary.pad_id


@dataclass
class CaptionSequences:
    rows: np.ndarray  # (M,) feature-cache row of each caption's image
    inputs: np.ndarray  # (M, T) int32
    targets: np.ndarray  # (M, T) int32

    def __len__(self) -> int:
        return len(self.rows)


def caption_sequences(files: RunFiles, vocab: Vocabulary, split: str, rows_of: dict[str, int]) -> CaptionSequences:
    """Encode every caption of `split`; T = vocab.max_length + 1."""
    width = vocab.max_length + 2
    rows, sequences = [], []
    for entry in read_captions(files.captions).split(split):
        for words in entry.references():
            ids = vocab.encode(words)
            sequences.append(ids + [vocab.pad_id] * (width - len(ids)))
            rows.append(rows_of[entry.id])
    if not rows:
        raise BadInput(f"the {split} split of {files.root} has no captions: run prepare with a {split} split")
    array = np.asarray(sequences, dtype=np.int32)
    return CaptionSequences(np.asarray(rows, dtype=np.int64), array[:, :-1], array[:, 1:].copy())


def sample_lengths(data: CaptionSequences | ImageCaptions) -> np.ndarray:
    """Each sample's real positions (its caption's words and `<end>`; an image's longest caption)."""
    counts = (data.targets != PAD_ID).sum(axis=-1)
    return counts if counts.ndim == 1 else counts.max(axis=-1)


def epoch_order(seed: int, epoch: int, lengths: np.ndarray, batch_size: int, window: int = 1) -> np.ndarray:
    """The order of the samples in one training epoch, a function of (seed, epoch) alone; each `batch_size`
    run of it is one batch.

    tf.data's own reshuffling follows its iterator, which a resumed run creates afresh: its epoch k+1
    would see the order an uninterrupted run saw in epoch 1. Seeding by epoch makes a run resumed after
    epoch k train on exactly the batches an uninterrupted one does.

    With `window` > 1 the shuffled samples are sorted by length within each `window` batches' worth, and the
    batches shuffled again (the last, short one stays last), so a batch holds captions of nearly one length and
    `make_dataset` cuts away its padding; window 1 is plain shuffled batches.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(lengths))
    if window <= 1:
        return order
    span = batch_size * window
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        order[start:start + span] = chunk[np.argsort(lengths[chunk], kind="stable")]
    full = len(order) // batch_size * batch_size
    batches = order[:full].reshape(-1, batch_size)
    shuffled = batches[np.random.default_rng([seed, epoch, 1]).permutation(len(batches))]
    return np.concatenate([shuffled.ravel(), order[full:]])


def steps_per_epoch(data: CaptionSequences | ImageCaptions, batch_size: int) -> int:
    return -(-len(data) // batch_size)


def make_dataset(features: np.ndarray, data: CaptionSequences | ImageCaptions, batch_size: int,
                 epochs: range | None = None, seed: int = 0, feature_input: str = "features", replicas: int = 1,
                 bucket_window: int = 1, trim: bool = True):
    """Batches of ({feature_input, words}, targets); features are gathered from the memory-mapped cache per batch.

    With `epochs`, the batches of those epochs one after another, each epoch in its `epoch_order` (fit with
    `steps_per_epoch`), batched by length within `bucket_window` batches; without, the samples once in their own
    order (validation). A sample is a caption (`CaptionSequences`) or an image with all its captions
    (`ImageCaptions`).

    With `trim`, each batch is cut to its longest caption: the positions after it are padding in every row,
    which the masked LSTM and the loss skip anyway (the loss divides by the real positions), so the loss and
    gradients are those of the full width, without the LSTM and output layers running over the padding (with
    dropout on, its masks are drawn for the shorter tensor: other draws from the same distribution).

    With `replicas` > 1 each batch is cut to a multiple of it: MirroredStrategy splits a batch of 49 into 25 and
    24 and then fails adding the two (TensorFlow 2.21, AddN of unequal shapes). An epoch's last batch loses at
    most `replicas - 1` samples, other ones each epoch (the order is reshuffled).
    """
    import tensorflow as tf  # lazy: caption_sequences and feature_scale serve TF-free callers too

    def gather(rows: np.ndarray) -> np.ndarray:
        return np.asarray(features[np.asarray(rows)], dtype=np.float32)

    def to_inputs(rows, words, targets):
        batch_features = tf.numpy_function(gather, [rows], tf.float32, stateful=False)
        batch_features.set_shape((None, features.shape[1]))
        return {feature_input: batch_features, "words": words}, targets

    def cut_padding(rows, words, targets):
        width = tf.reduce_max(tf.reduce_sum(tf.cast(targets != PAD_ID, tf.int32), axis=-1))
        return rows, words[..., :width], targets[..., :width]

    def even(*columns):
        kept = tf.shape(columns[0])[0] // replicas * replicas
        return tuple(column[:kept] for column in columns)

    columns = (data.rows, data.inputs, data.targets)
    if epochs is None:
        batches = tf.data.Dataset.from_tensor_slices(columns).batch(batch_size)
    else:
        lengths = sample_lengths(data)
        orders = np.stack([epoch_order(seed, epoch, lengths, batch_size, bucket_window) for epoch in epochs])
        tensors = tuple(tf.constant(column) for column in columns)
        batches = (tf.data.Dataset.from_tensor_slices(orders)
                   .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
                   .map(lambda index: tuple(tf.gather(t, index) for t in tensors)))
    if trim:
        batches = batches.map(cut_padding)
    if replicas > 1:
        batches = batches.map(even)
    return batches.map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


@dataclass
class ImageCaptions:
    """Captions grouped by image, for `fit --fine-tune-top`: each image passes fc1 and fc2 once per step."""

    rows: np.ndarray  # (N,) feature-cache row of each image
    inputs: np.ndarray  # (N, C, T) int32; an image with fewer than C captions is padded with all-pad captions
    targets: np.ndarray  # (N, C, T) int32; pad targets cost nothing (the loss ignores them)

    def __len__(self) -> int:
        return len(self.rows)


def group_by_image(data: CaptionSequences) -> ImageCaptions:
    """Regroup one-sample-per-caption data by image, images in the order they first appear."""
    images, first = np.unique(data.rows, return_index=True)
    images = images[np.argsort(first)]
    slot_of = {int(row): i for i, row in enumerate(images)}
    counts = np.bincount([slot_of[int(r)] for r in data.rows], minlength=len(images))
    width = data.inputs.shape[1]
    inputs = np.zeros((len(images), int(counts.max()), width), dtype=np.int32)
    targets = np.zeros_like(inputs)
    filled = np.zeros(len(images), dtype=np.int64)
    for row, words, target in zip(data.rows, data.inputs, data.targets):
        slot = slot_of[int(row)]
        inputs[slot, filled[slot]], targets[slot, filled[slot]] = words, target
        filled[slot] += 1
    return ImageCaptions(images.astype(np.int64), inputs, targets)


def feature_scale(features: np.ndarray, rows: np.ndarray, sample: int = 4096, seed: int = 0) -> float:
    """1 / RMS of the training images' features, so the first Dense layer sees O(1) inputs."""
    unique = np.unique(rows)
    picked = np.random.default_rng(seed).choice(unique, size=min(sample, len(unique)), replace=False)
    values = np.asarray(features[np.sort(picked)], dtype=np.float64)
    rms = float(np.sqrt(np.mean(values**2)))
    return 1.0 / rms if rms > 0 else 1.0
