"""Options that take words out of each row's candidates after a step (Hugging Face's logits processors, applied
to the step's top-K): the searches run every option here that is on, so a new option of this kind is its
`GenerationConfig` field, the module that says which words a row may not take, and its row in `FILTERS`.

Why the rows' candidates still cover every word the search can pick: a row's top-K is a prefix of its whole
sorted distribution, so the allowed words left in it are that row's best allowed words, in order. The searches
need a row's `needed` best (1 for greedy and the beam's shadow, 2k for a beam of width k); whenever at least that
many are left, the search is the one over the whole vocabulary. A live row with fewer left (more of its top-K
removed than K - needed) is refused with the fix, never searched on a short list; a step that returns every word
covers any removal.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from demo.errors import BadInput
from demo.search import repeats
from demo.search.step import SearchOptions, StepOutput

DEAD = -np.inf
# (candidate ids (R, K), each row's words so far (R, t), options) -> which candidates the row may not take
Removal = Callable[[np.ndarray, np.ndarray, SearchOptions], np.ndarray]


@dataclass(frozen=True)
class StepFilter:
    option: str  # the `GenerationConfig` field that turns it on (any true value)
    removed: Removal


FILTERS = (StepFilter("no_repeat_ngram_size", repeats.removed),)


def active_filters(options: SearchOptions) -> tuple[StepFilter, ...]:
    """The filters this search runs; none for the default options, which then cost nothing."""
    return tuple(f for f in FILTERS if getattr(options, f.option))


def apply_filters(filters: tuple[StepFilter, ...], out: StepOutput, history: np.ndarray, options: SearchOptions,
                  needed: int, vocab_size: int, live: np.ndarray | None = None) -> StepOutput:
    """The step's rows without the words the filters remove, still sorted high to low with ties by lower id;
    raises `BadInput` when a live row (`live`: all rows when None) keeps fewer than `needed` of a partial top-K."""
    gone = np.zeros(out.top_ids.shape, dtype=bool)
    for step_filter in filters:
        gone |= step_filter.removed(out.top_ids, history, options)
    if not gone.any():
        return out
    log_probs = np.where(gone, DEAD, out.top_log_probs)
    order = np.lexsort((out.top_ids, -log_probs), axis=1)  # the removed sink to the end; the others keep order
    log_probs, ids = np.take_along_axis(log_probs, order, axis=1), np.take_along_axis(out.top_ids, order, axis=1)
    top_k = ids.shape[1]
    if top_k < vocab_size:
        left = np.isfinite(log_probs).sum(axis=1)
        short = (left < min(needed, top_k)) & (True if live is None else live)
        if short.any():
            names = ", ".join(f"{f.option} {getattr(options, f.option)}" for f in filters)
            raise BadInput(f"{names} took {top_k - int(left[short].min())} of a row's {top_k} best words, leaving "
                           f"fewer than the {needed} this search needs; use a smaller {filters[0].option} or fewer "
                           f"beams, or re-export with `python -m export --top-k {2 * top_k}`")
    return StepOutput(log_probs, ids, out.end_log_prob)
