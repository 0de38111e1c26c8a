"""The top-k search equals the search over the whole distribution, caption for caption and bit for bit.

The oracle is the search as it was before the decoder step returned its top-k (tests/demo/
full_vocabulary_search.py, kept verbatim): it reads all V log-probabilities per row. Today's searches
read each row's 2k best words (K = 20 covers beams up to 10), with the rows' reordering, the ban and
the top-k done by the step model: in numpy for a whole-distribution model, inside the ONNX graph for
the exported decoder.
"""
import numpy as np
import pytest

from demo.generation import DEFAULTS, GenerationConfig
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


def assert_bundle_searches_like_the_oracle(bundle, features, vocab) -> int:
    """Every width, n-best on: the bundle's top-k step against the oracle over its decoder_step.onnx (all V words).

    The two graphs compute the same log-probabilities in different graphs, so they may differ in the last
    bits: captions must be identical and log-probabilities equal to 1e-5. Returns how many captions ended
    by <end>, for the caller's premise.
    """
    from demo.onnx_step import OnnxStepModel, WholeStepModel
    from demo.search import options_for
    from demo.sessions import create_session

    def session(name):
        return create_session(bundle / name, "cpu", threads=1)[0]

    topk = OnnxStepModel(session("decoder_step_topk.onnx"), session("image_projection.onnx"))
    whole = WholeStepModel(session("decoder_step.onnx"))
    assert topk.top_k == DEFAULTS.top_k < len(vocab)  # a real truncation: the step returns 20 of V words
    ended = 0
    for width in WIDTHS:
        options = options_for(vocab, GenerationConfig(num_beams=width, num_return_sequences=min(width, 3)))
        found = generate(topk, features, vocab.start_id, vocab.end_id, options)
        for got, want in zip(found, oracle(whole, features, options)):
            assert [h.tokens for h in got] == [h.tokens for h in want], width
            assert [h.finished for h in got] == [h.finished for h in want]
            np.testing.assert_allclose([h.log_prob for h in got], [h.log_prob for h in want], rtol=0, atol=1e-5)
            ended += sum(h.finished for h in got)
    return ended


@pytest.mark.slow  # needs the exported session run (~3 min to build, shared with other tests)
def test_the_synthetic_bundle_searches_like_the_full_vocabulary_search(captioner, exported_run):
    from demo.preprocess import load_image
    from tests.helpers import split_images

    features, _ = captioner.encode(np.stack([load_image(p) for p in split_images(exported_run, count=12)]))
    assert assert_bundle_searches_like_the_oracle(exported_run / "onnx", features, captioner.vocab) > 0


@pytest.mark.slow  # builds a small Flickr-scale decoder from real captions (~2 min)
@pytest.mark.timeout(600)
def test_a_flickr_scale_bundle_searches_like_the_full_vocabulary_search(shared_flickr8k, tmp_path):
    """300 real Flickr8k images (a vocabulary of ~1.5k words), trained, exported decoder-only."""
    from demo.vocab import Vocabulary
    from tests.helpers import run_module
    from train.captions_file import read_captions
    from train.feature_cache import load_cache
    from train.run_files import RunFiles

    built = run_module("bench.flickr_scale_model", "--captions", str(shared_flickr8k / "Flickr8k.token.txt"),
                       "--out", str(tmp_path / "run"), "--num-images", "300", "--epochs", "3",
                       "--embed-dim", "64", "--hidden-dim", "64")
    assert built.returncode == 0, built.stderr[-3000:]
    files = RunFiles(tmp_path / "run")
    features = load_cache(files).lookup(read_captions(files.captions).ids("test")[:16])
    assert assert_bundle_searches_like_the_oracle(files.bundle, features, Vocabulary.load(files.vocab)) > 0
