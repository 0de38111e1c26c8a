"""The training-speed benchmark reports both recipes consistently; wall-clock values are not asserted."""
import numpy as np
import pytest

from bench.training_speed import prefix_samples, synthetic_captions, whole_sequences
from demo.vocab import build_vocabulary


def test_prefix_samples_expand_each_caption_into_its_next_word_targets():
    rows, captions = synthetic_captions(2)
    vocab, _ = build_vocabulary(captions, min_count=1, max_length=20)
    sequences = whole_sequences(vocab, rows, captions)
    samples = prefix_samples(sequences)
    assert len(samples) == sum(len(words) + 1 for words in captions)
    assert samples.prefixes.shape[1] == sequences.inputs.shape[1]
    first = vocab.encode(captions[0])  # <start> w1 .. wn <end>
    for i in range(1, len(first)):
        prefix = samples.prefixes[i - 1]
        assert list(prefix[prefix != 0]) == first[:i] and prefix[-1] != 0  # left-padded
        assert samples.next_words[i - 1] == first[i]
    assert np.all(samples.next_words != 0)


@pytest.mark.slow
def test_quick_measure_reports_rates_and_a_consistent_ratio():
    from bench.training_speed import measure

    result = measure(quick=True)
    assert result["name"] == "training_speed" and result["batch_size"] == 64
    assert set(result["model"]) >= {"embed_dim", "hidden_dim", "vocab_size"}
    samples, rates, epoch = result["samples_per_epoch"], result["samples_per_s"], result["seconds_per_epoch"]
    assert samples["ours"] == result["captions"] and samples["seed"] > samples["ours"]
    for side in ("ours", "seed"):
        assert rates[side]["median_per_s"] > 0 and rates[side]["repeats"] == 2
        assert epoch[side] == pytest.approx(samples[side] / rates[side]["median_per_s"])
    assert result["ratio_seed_to_ours"] == pytest.approx(epoch["seed"] / epoch["ours"])
    assert result["target"]["met"] == (result["ratio_seed_to_ours"] >= result["target"]["ratio_at_least"])
