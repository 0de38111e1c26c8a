"""The top-k search equals the search over the whole distribution, caption for caption and bit for bit.

The oracle is the search as it was before the decoder step returned its top-k (tests/demo/
full_vocabulary_search.py, kept verbatim): it reads all V log-probabilities per row. Today's searches
read each row's 2k best words (K = 20 covers beams up to 10), with the rows' reordering, the ban and
the top-k done by the step model: in numpy for a whole-distribution model, inside the ONNX graph for
the exported decoder.
"""
import numpy as np
import pytest

from demo.generation import DEFAULTS
from demo.search import generate
from demo.search.step import SearchOptions, TopKStep
from tests.demo.full_vocabulary_search import full_beam_search, full_greedy_search

START, END = 1, 2
BANNED = (0, START, 3)
WIDTHS = range(1, DEFAULTS.max_num_beams + 1)


class SharpRNN:
    """A random RNN over a few hundred words, peaked enough to end its captions: rows are independent."""

    def __init__(self, vocab_size: int = 300, hidden: int = 24, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.vocab_size = vocab_size
        self.embed = rng.normal(0, 1.0, (vocab_size, hidden)).astype(np.float32)
        self.recur = rng.normal(0, 0.4, (hidden, hidden)).astype(np.float32)
        self.image = rng.normal(0, 1.0, (5, hidden)).astype(np.float32)
        self.out = rng.normal(0, 1.6, (hidden, vocab_size)).astype(np.float32)
        self.bias = np.zeros(vocab_size, dtype=np.float32)
        self.bias[END] = 8.0  # captions end, some early, some at max_length

    def initial_state(self, features):
        return {"h": np.tanh(features @ self.image).astype(np.float32)}

    def step(self, tokens, state):
        h = np.tanh(self.embed[tokens] + state["h"] @ self.recur)
        logits = h @ self.out + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        return (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32), {"h": h}


def oracle(model, features, options):
    if options.num_beams == 1:
        return [[h] for h in full_greedy_search(model, features, START, END, options)]
    return full_beam_search(model, features, START, END, options)


def as_tuples(n_bests):
    return [[(h.tokens, h.log_prob, h.score, h.finished) for h in n_best] for n_best in n_bests]


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.2])
@pytest.mark.parametrize("seed", range(3))
def test_top_20_search_equals_the_full_vocabulary_search_for_every_width(seed, alpha):
    model = SharpRNN(seed=seed)
    features = np.random.default_rng(seed + 10).normal(size=(7, 5)).astype(np.float32)
    searched = TopKStep(model, END, top_k=DEFAULTS.top_k)
    ended_early, cut = 0, 0
    for width in WIDTHS:
        options = SearchOptions(max_length=12, num_beams=width, length_penalty=alpha, num_return_sequences=width,
                                banned_ids=BANNED)
        found = generate(searched, features, START, END, options)
        assert as_tuples(found) == as_tuples(oracle(model, features, options)), width
        ended_early += sum(h.finished for n_best in found for h in n_best)
        cut += sum(not h.finished for n_best in found for h in n_best)
    assert ended_early > 0 and cut > 0  # the premise: captions end by <end>, and some at max_length


def test_fewer_words_than_2k_per_row_is_refused_naming_the_fix():
    model = TopKStep(SharpRNN(), END, top_k=6)
    options = SearchOptions(max_length=5, num_beams=4, banned_ids=BANNED)
    with pytest.raises(ValueError, match=r"num_beams 4 needs the 8 best words per step.*--top-k 8"):
        generate(model, np.zeros((1, 5), dtype=np.float32), START, END, options)


@pytest.mark.slow  # needs the exported session run (~3 min to build, shared with other tests)
def test_exported_top_k_decoder_equals_the_full_search_over_decoder_step(captioner, exported_run):
    """The graph's gather, ban and TopK against the oracle over decoder_step.onnx (all V words per row)."""
    from demo.onnx_step import WholeStepModel
    from demo.preprocess import load_image
    from demo.sessions import create_session
    from tests.helpers import split_images

    whole = WholeStepModel(create_session(exported_run / "onnx" / "decoder_step.onnx", "cpu", threads=1)[0])
    features, _ = captioner.encode(np.stack([load_image(p) for p in split_images(exported_run, count=12)]))
    vocab = captioner.vocab
    assert captioner.decoder.top_k == DEFAULTS.top_k
    for width in WIDTHS:
        options = captioner.options(width, num_return_sequences=min(width, 3))
        found = generate(captioner.decoder, features, vocab.start_id, vocab.end_id, options)
        for got, want in zip(found, oracle(whole, features, options)):
            assert [h.tokens for h in got] == [h.tokens for h in want], width
            assert [h.finished for h in got] == [h.finished for h in want]
            np.testing.assert_allclose([h.log_prob for h in got], [h.log_prob for h in want], rtol=0, atol=1e-5)
