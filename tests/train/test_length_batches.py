"""Training batches by caption length, each cut to its longest caption: the same loss, less work."""
import numpy as np

from train.model import ModelSpec, build_training_model
from train.sequences import CaptionSequences, epoch_order, make_dataset, sample_lengths, steps_per_epoch
from train.tf_import import import_keras

BATCH, WINDOW, WIDTH = 16, 4, 31


def random_captions(count: int, seed: int = 0) -> CaptionSequences:
    """Captions of 3..20 words (with `<start>`/`<end>`) padded to the product's width, over 12 images."""
    rng = np.random.default_rng(seed)
    inputs = np.zeros((count, WIDTH), np.int32)
    targets = np.zeros_like(inputs)
    for row, length in enumerate(rng.integers(3, 21, count)):
        words = rng.integers(4, 40, length)
        inputs[row, :length + 1] = [1, *words]
        targets[row, :length + 1] = [*words, 2]
    return CaptionSequences(rng.integers(0, 12, count), inputs, targets)


def test_each_epoch_is_a_seeded_permutation_whose_batches_hold_captions_of_about_one_length():
    lengths = sample_lengths(random_captions(300))
    order = epoch_order(7, 3, lengths, BATCH, WINDOW)
    np.testing.assert_array_equal(np.sort(order), np.arange(300))
    np.testing.assert_array_equal(order, epoch_order(7, 3, lengths, BATCH, WINDOW))  # what resume relies on
    assert not np.array_equal(order, epoch_order(7, 4, lengths, BATCH, WINDOW))
    np.testing.assert_array_equal(epoch_order(7, 3, lengths, BATCH, 1),
                                  np.random.default_rng([7, 3]).permutation(300))  # window 1: plain shuffling
    batches = [lengths[order[i:i + BATCH]] for i in range(0, 300, BATCH)]
    cut = sum(len(b) * b.max() for b in batches)
    shuffled = epoch_order(7, 3, lengths, BATCH, 1)
    plain = sum(BATCH * lengths[shuffled[i:i + BATCH]].max() for i in range(0, 300, BATCH))
    # sorted within each window, a batch's longest caption is at most the next batch's shortest: the spreads of
    # a window's batches add up to at most its range of lengths
    spread = sum(int(b.max() - b.min()) for b in batches)
    assert spread <= -(-len(batches) // WINDOW) * int(lengths.max() - lengths.min())
    assert cut < plain < WIDTH * 300


def fitted(data: CaptionSequences, features: np.ndarray, trim: bool):
    keras = import_keras()
    keras.utils.set_random_seed(0)
    model = build_training_model(ModelSpec(vocab_size=40, embed_dim=24, hidden_dim=16, dropout=0.0))
    model.compile(optimizer=keras.optimizers.Adam(1e-2, clipnorm=5.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0))
    train = make_dataset(features, data, BATCH, range(2), seed=5, bucket_window=WINDOW, trim=trim)
    history = model.fit(train, steps_per_epoch=steps_per_epoch(data, BATCH), epochs=2, verbose=0, shuffle=False,
                        validation_data=make_dataset(features, data, BATCH, trim=trim))
    return history.history, model.get_weights()


def test_cutting_the_padding_trains_exactly_as_the_full_width_does():
    data = random_captions(160)
    features = np.random.default_rng(1).random((12, 4096), dtype=np.float32).astype(np.float16)
    cut_history, cut_weights = fitted(data, features, trim=True)
    full_history, full_weights = fitted(data, features, trim=False)
    # the masked loss divides by the real positions, so the width only reorders float sums (measured here: losses
    # equal to 1e-7, weights to 1e-4 of each tensor's largest; Adam magnifies the rounding of tiny gradients)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(cut_history[key], full_history[key], rtol=1e-5)
    for cut, full in zip(cut_weights, full_weights):
        assert np.abs(cut - full).max() <= 1e-3 * np.abs(full).max()
