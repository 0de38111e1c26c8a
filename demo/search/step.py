"""The step interface that every caption search runs against.

A step model advances many hypotheses by one word in one call: numpy in,
numpy out, so the same search drives the Keras step model during evaluation
and an ONNX Runtime session when serving. Its state is a dict of arrays whose
first axis is the hypothesis (row); the search only ever repeats rows (one
image -> k beams) and reorders them (a beam continues from another row), so it
never needs to know what the state holds (LSTM h and c, image features, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from demo.errors import BadInput
from demo.generation import DEFAULTS

State = dict[str, np.ndarray]


class StepModel(Protocol):
    vocab_size: int

    def initial_state(self, features: np.ndarray) -> State:
        """State for one row per image, from image features (B, D)."""

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """Feed one token per row (N,) and return log-probabilities (N, V) and the next state."""


def take_rows(state: State, rows: np.ndarray) -> State:
    """Rows `rows` of every state array, in that order (repeats allowed)."""
    return {name: value[rows] for name, value in state.items()}


@dataclass(frozen=True)
class SearchOptions:
    """Generation options, named as in Hugging Face `generate` so users know them.

    `length_penalty` is GNMT's alpha: a finished caption is ranked by
    log_prob / ((5 + length) / 6) ** alpha, length counting words and the end
    token. 0 ranks by raw log-probability (which favours short captions);
    larger values favour longer ones.
    """

    max_length: int = DEFAULTS.max_length_without_vocabulary  # words, not counting <start>/<end>
    num_beams: int = DEFAULTS.num_beams
    length_penalty: float = DEFAULTS.length_penalty
    num_return_sequences: int = DEFAULTS.num_return_sequences
    banned_ids: tuple[int, ...] = ()  # never generated (e.g. <pad>, <start>, <unk>)

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise BadInput("max_length must be at least 1")
        if self.num_beams < 1:
            raise BadInput("num_beams must be at least 1")
        if self.length_penalty < 0:
            raise BadInput("length_penalty must be >= 0")
        if not 1 <= self.num_return_sequences <= self.num_beams:
            raise BadInput("num_return_sequences must be between 1 and num_beams")


@dataclass(order=True)
class Hypothesis:
    """One caption candidate: word ids (no <start>/<end>) and its scores."""

    score: float  # log_prob divided by the length penalty: what beams are ranked by
    log_prob: float = field(compare=False)
    tokens: tuple[int, ...] = field(compare=False)
    finished: bool = field(compare=False, default=True)  # False: reached max_length, closed by force


def length_penalty(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


def normalized(log_prob: float, num_words: int, alpha: float) -> float:
    """Rank score of a caption of `num_words` words closed by the end token (counted in the length)."""
    return log_prob / length_penalty(num_words + 1, alpha)


def ban(log_probs: np.ndarray, banned_ids: tuple[int, ...]) -> np.ndarray:
    """Make banned tokens impossible, in place: the array is the step model's fresh output."""
    if banned_ids:
        log_probs[:, list(banned_ids)] = -np.inf
    return log_probs
