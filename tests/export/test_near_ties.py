"""The caption parity gate of the export: identical captions, or a near-tie, never a real difference.

A trained model may have, on some test image, two words whose scores differ by less than the
1e-4 that Keras and ONNX Runtime may differ by; which images, depends on the weights, and so on
the CPU that trained them. The gate must pass such a caption and still fail a real difference.
"""
import numpy as np

from demo.search.step import TopKStep
from demo.vocab import SPECIAL_TOKENS, Vocabulary
from export.parity import TIE_TOLERANCE, compare_captions

VOCAB = Vocabulary(SPECIAL_TOKENS + ("red", "blue", "circle", "square"), max_length=4)
RED, BLUE, CIRCLE, SQUARE = 4, 5, 6, 7


class TwoWordModel:
    """First word red or blue (blue ahead by `gap`), then the image's own shape word, then <end>."""

    vocab_size = len(VOCAB)

    def __init__(self, gap: float):
        self.gap = gap

    def initial_state(self, features: np.ndarray) -> dict:
        return {"shape": features[:, 0].astype(np.int64), "t": np.zeros(len(features), dtype=np.int64)}

    def step(self, tokens: np.ndarray, state: dict):
        logits = np.full((len(tokens), self.vocab_size), -20.0, dtype=np.float32)
        for row, t in enumerate(state["t"]):
            if t == 0:
                logits[row, RED], logits[row, BLUE] = 0.0, self.gap
            elif t == 1:
                logits[row, state["shape"][row]] = 0.0
            else:
                logits[row, VOCAB.end_id] = 0.0
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return log_probs, {"shape": state["shape"], "t": state["t"] + 1}


def searchable(gap: float) -> TopKStep:
    return TopKStep(TwoWordModel(gap), VOCAB.end_id)


FEATURES = np.array([[CIRCLE], [SQUARE]], dtype=np.float32)


def test_a_near_tie_passes_and_is_counted():
    reference = [[RED, CIRCLE], [RED, SQUARE]]  # what a decoder 1e-5 the other way would say
    for beams in (1, 3):
        compared = compare_captions(searchable(1e-5), FEATURES, VOCAB, beams, reference)
        assert compared == {"identical": 0, "near_ties": 2, "different": []}, beams


def test_a_real_difference_fails_the_gate():
    reference = [[BLUE, CIRCLE], [RED, SQUARE]]
    compared = compare_captions(searchable(20 * TIE_TOLERANCE), FEATURES, VOCAB, 1, reference)
    assert compared == {"identical": 1, "near_ties": 0, "different": [1]}
    wrong_shape = [[BLUE, SQUARE], [BLUE, SQUARE]]
    assert compare_captions(searchable(1e-5), FEATURES, VOCAB, 3, wrong_shape)["different"] == [0]
