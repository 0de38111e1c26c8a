"""The step interface that every caption search runs against.

A step model advances many hypotheses by one word in one call and returns, per
row, only what a search can use: the K most likely next words (log-probabilities
sorted high to low, ties broken by the lower token id, as ONNX TopK does), and
the `<end>` token's log-probability (to close a caption cut at max_length).
Banned tokens are masked before the top-k, so they never appear.

The state is the model's own business (numpy arrays, or ONNX Runtime values
that stay on the GPU): the search only says, for each new row, which previous
row it continues (`rows`: one image -> k beams, a beam continuing another).
The same searches drive the Keras step model during evaluation and ONNX
Runtime when serving.

Why K = 2k is exact for a beam of width k: the search keeps the 2k best of all
k x V candidates (beam score + word log-prob; up to k of them may be `<end>`,
each beam has one, so 2k always leave k that go on). A candidate among those
2k has fewer than 2k candidates above it, so fewer than 2k above it in its own
row: it is among its row's 2k best words. The top-2k of each row therefore
contains every candidate the full search looks at, in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from demo.errors import BadInput
from demo.generation import DEFAULTS, GenerationConfig

State = dict[str, Any]


@dataclass
class StepOutput:
    top_log_probs: np.ndarray  # (N, K) float32, each row high to low
    top_ids: np.ndarray  # (N, K) int64
    end_log_prob: np.ndarray  # (N,) float32


class StepModel(Protocol):
    vocab_size: int
    top_k: int  # K: words per row each step returns

    def initial_state(self, features: np.ndarray, banned_ids: tuple[int, ...]) -> State:
        """State for one row per image, from image features (B, D); `banned_ids` are never returned."""

    def step(self, tokens: np.ndarray, rows: np.ndarray, state: State) -> tuple[StepOutput, State]:
        """New row r continues previous row rows[r] with word tokens[r]: its top-K next words, and the state."""


class FullStepModel(Protocol):
    """A step model that returns the whole distribution (Keras, decoder_step.onnx): wrap it in `TopKStep`."""

    vocab_size: int

    def initial_state(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Row-aligned arrays, one row per image."""

    def step(self, tokens: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Log-probabilities (N, V) and the next state."""


def ban_mask(vocab_size: int, banned_ids: tuple[int, ...]) -> np.ndarray:
    """0 for allowed tokens, -inf for banned ones: added to log-probabilities (x + 0 is x, bit for bit)."""
    mask = np.zeros(vocab_size, dtype=np.float32)
    mask[list(banned_ids)] = -np.inf
    return mask


def top_k(log_probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k largest values, high to low, ties by lower index: ONNX TopK's order, in numpy."""
    k = min(k, log_probs.shape[1])
    part = np.argpartition(-log_probs, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(log_probs, part, axis=1)
    order = np.lexsort((part, -values), axis=1)
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(part, order, axis=1).astype(np.int64)


class TopKStep:
    """A whole-distribution step model behind `StepModel`: the rows' gather, the ban and the top-k in numpy."""

    def __init__(self, model: FullStepModel, end_id: int, top_k: int = DEFAULTS.top_k):
        self.model, self.end_id, self.top_k = model, end_id, top_k
        self.vocab_size = model.vocab_size

    def initial_state(self, features: np.ndarray, banned_ids: tuple[int, ...]) -> State:
        return {"rows": self.model.initial_state(features), "ban": ban_mask(self.vocab_size, banned_ids)}

    def step(self, tokens: np.ndarray, rows: np.ndarray, state: State) -> tuple[StepOutput, State]:
        gathered = {name: value[rows] for name, value in state["rows"].items()}
        log_probs, after = self.model.step(tokens, gathered)
        masked = log_probs + state["ban"]
        values, ids = top_k(masked, self.top_k)
        return StepOutput(values, ids, masked[:, self.end_id]), {"rows": after, "ban": state["ban"]}


def require_top_k(model: StepModel, needed: int, num_beams: int) -> None:
    if model.top_k < min(needed, model.vocab_size):  # a step that returns every word covers any width
        raise BadInput(f"num_beams {num_beams} needs the {needed} best words per step, but this decoder returns "
                       f"{model.top_k} (enough for num_beams <= {model.top_k // 2}); use fewer beams, or "
                       f"re-export with `python -m export --top-k {needed}`")


@dataclass(frozen=True)
class SearchOptions(GenerationConfig):
    """A `GenerationConfig` made concrete for one vocabulary (`demo.search.options_for`): the length a number, the
    tokens never generated listed. Every generation option is its field by inheritance, so a new option reaches
    the searches without being copied here.

    `length_penalty` is GNMT's alpha: a finished caption is ranked by
    log_prob / ((5 + length) / 6) ** alpha, length counting words and the end
    token. 0 ranks by raw log-probability (which favours short captions);
    larger values favour longer ones.
    """

    max_length: int = DEFAULTS.max_length_without_vocabulary  # words, not counting <start>/<end>
    banned_ids: tuple[int, ...] = ()  # never generated (e.g. <pad>, <start>, <unk>)


@dataclass(order=True)
class Hypothesis:
    """One caption candidate: word ids (no <start>/<end>) and its scores."""

    score: float  # log_prob divided by the length penalty: what beams are ranked by
    log_prob: float = field(compare=False)
    tokens: tuple[int, ...] = field(compare=False)
    finished: bool = field(compare=False, default=True)  # False: reached max_length, closed by force
    # What each word cost, for per-word confidence: log_prob is their sum plus <end>'s, added in this order
    # (float64, left to right), so `sum(word_log_probs) + end_log_prob` equals it exactly.
    word_log_probs: tuple[float, ...] = field(compare=False, default=())
    end_log_prob: float = field(compare=False, default=0.0)


def length_penalty(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


def normalized(log_prob: float, num_words: int, alpha: float) -> float:
    """Rank score of a caption of `num_words` words closed by the end token (counted in the length)."""
    return log_prob / length_penalty(num_words + 1, alpha)
