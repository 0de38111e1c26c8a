"""The training-speed benchmark: the seed's recipe expands captions into prefixes, the report compares
seconds per epoch and says whether the 20x target is met. Measured wall-clock values are not asserted."""
import numpy as np
import pytest

from bench.training_speed import epoch_comparison, prefix_samples, synthetic_captions, whole_sequences
from demo.vocab import build_vocabulary


def test_prefix_samples_expand_each_caption_into_its_next_word_targets():
    rows, captions = synthetic_captions(2)
    vocab, _ = build_vocabulary(captions, min_count=1, max_length=20)
    sequences = whole_sequences(vocab, rows, captions)
    samples = prefix_samples(sequences)
    assert len(samples) == sum(len(words) + 1 for words in captions)
    assert samples.prefixes.shape[1] == max(len(words) for words in captions) + 2  # as the seed padded
    first = vocab.encode(captions[0])  # <start> w1 .. wn <end>
    for i in range(1, len(first)):
        prefix = samples.prefixes[i - 1]
        assert list(prefix[prefix != 0]) == first[:i] and prefix[-1] != 0  # left-padded
        assert samples.next_words[i - 1] == first[i]
    assert np.all(samples.next_words != 0)


@pytest.mark.parametrize("seed_rate, seed_epoch_s, ratio, met", [
    (150.0, 80.0, 40.0, True),   # the seed's epoch is 40x ours
    (300.0, 40.0, 20.0, True),   # exactly the target: "at least 20x" is met
    (800.0, 15.0, 7.5, False),   # the seed's recipe is faster per sample here: 7.5x, below the target
])
def test_epoch_comparison_reports_seconds_per_epoch_and_whether_the_20x_target_is_met(seed_rate, seed_epoch_s,
                                                                                       ratio, met):
    """1,000 captions at 500 samples/s: ours takes 2 s per epoch, at full width 4 s; the seed's 12,000 prefixes
    at `seed_rate`."""
    rates = {"ours": {"median_per_s": 500.0, "repeats": 2}, "full_width": {"median_per_s": 250.0, "repeats": 2},
             "seed": {"median_per_s": seed_rate, "repeats": 2}}
    result = epoch_comparison({"ours": 1000, "full_width": 1000, "seed": 12000}, rates)
    assert result["seconds_per_epoch"] == pytest.approx({"ours": 2.0, "full_width": 4.0, "seed": seed_epoch_s})
    assert result["ratio_seed_to_ours"] == pytest.approx(ratio)
    assert result["ratio_full_width_to_ours"] == pytest.approx(2.0)
    assert result["target"] == {"ratio_at_least": 20.0, "met": met}


@pytest.mark.slow
def test_smoke_measure_trains_both_recipes_and_reports_their_comparison():
    from bench.training_speed import measure

    result = measure(effort="smoke")
    assert result["name"] == "training_speed" and result["batch_size"] == 64
    assert set(result["model"]) >= {"embed_dim", "hidden_dim", "vocab_size"}
    _, captions = synthetic_captions(result["images"])
    samples, rates = result["samples_per_epoch"], result["samples_per_s"]
    assert samples == {"ours": len(captions), "full_width": len(captions),
                       "seed": sum(len(words) + 1 for words in captions)}
    for side in ("ours", "full_width", "seed"):
        assert rates[side]["median_per_s"] > 0 and rates[side]["repeats"] == 1
    reported = {key: result[key] for key in ("seconds_per_epoch", "ratio_seed_to_ours", "ratio_full_width_to_ours",
                                             "target")}
    assert reported == epoch_comparison(samples, rates), "the report is the comparison of the measured rates"


@pytest.mark.slow
def test_flickr_scale_training_compares_the_cut_batches_with_the_full_width(tmp_path, shared_flickr8k):
    """On the first 300 lines of the real Flickr8k captions (60 images): each side trains, and the table shows
    the ratio the entry holds."""
    from bench.report import ROWS
    from bench.training_speed import measure_flickr_scale

    source = shared_flickr8k / "Flickr8k.token.txt"
    captions = tmp_path / "Flickr8k.token.txt"
    captions.write_text("".join(source.read_text().splitlines(keepends=True)[:300]))
    entry = measure_flickr_scale(captions, effort="smoke", batch_size=16)
    assert entry["captions"] == 300 and entry["full_width"] == 31
    epoch = entry["seconds_per_epoch"]
    assert set(epoch) == {"cut", "by_length", "full_width"} and all(v > 0 for v in epoch.values())
    assert entry["ratio_cut_to_full_width"] == pytest.approx(epoch["cut"] / epoch["full_width"])
    assert entry["target"]["met"] == (entry["ratio_cut_to_full_width"] <= 0.5)
    assert f"| {entry['ratio_cut_to_full_width']:.2f} |" in "\n".join(ROWS[entry["name"]](entry))
