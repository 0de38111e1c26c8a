"""`no_repeat_ngram_size`, as in Hugging Face `generate`: no n-gram of that size appears twice in a caption.

The words a row may not take next are those that followed its last n - 1 words earlier in the same caption.
They depend on the row's own words, so they are taken out of each row's top-K after the step, in numpy; the
step's graph and its batch-wide ban input stay as they are.

Why the rows' candidates still cover every word the search can pick: a row's top-K is a prefix of its whole
sorted distribution, so the allowed words left in it are that row's best allowed words, in order. The searches
need a row's `needed` best (1 for greedy and the shadow, 2k for a beam of width k); whenever at least that many
are left, the search is the one over the whole vocabulary. A row with fewer left (more of its top-K banned than
K - needed) is refused with the fix, never searched on a short list; a step that returns every word covers any
ban.
"""
from __future__ import annotations

import numpy as np

from demo.errors import BadInput
from demo.search.step import StepOutput

DEAD = -np.inf


def banned_next_words(history: np.ndarray, n: int) -> list[set[int]]:
    """For each row of words (R, t): the words that would complete an n-gram already in that row."""
    rows, t = history.shape
    if n < 1 or t < n - 1:
        return [set() for _ in range(rows)]
    banned: list[set[int]] = []
    for words in history.tolist():
        context = tuple(words[t - n + 1:]) if n > 1 else ()
        banned.append({words[i + n - 1] for i in range(t - n + 1) if tuple(words[i:i + n - 1]) == context})
    return banned


def ban_repeats(out: StepOutput, history: np.ndarray, n: int, needed: int, vocab_size: int,
                live: np.ndarray | None = None) -> StepOutput:
    """The step's rows with the words that would repeat an n-gram removed (rows stay sorted high to low, ties
    by lower id); raises `BadInput` when a live row keeps fewer than `needed` words of a partial top-K."""
    banned = banned_next_words(history, n)
    if not any(banned):
        return out
    log_probs, ids = out.top_log_probs.copy(), out.top_ids
    for row, words in enumerate(banned):
        if words:
            log_probs[row, np.isin(ids[row], list(words))] = DEAD
    order = np.lexsort((ids, -log_probs), axis=1)  # the removed words sink to the end; the others keep their order
    log_probs, ids = np.take_along_axis(log_probs, order, axis=1), np.take_along_axis(ids, order, axis=1)
    top_k = ids.shape[1]
    if top_k < vocab_size:
        left = np.isfinite(log_probs).sum(axis=1)
        short = left < min(needed, top_k)
        if live is not None:
            short &= live
        if short.any():
            raise BadInput(f"no_repeat_ngram_size {n} took {top_k - int(left[short].min())} of a row's {top_k} best "
                           f"words, leaving fewer than the {needed} this search needs; use a smaller "
                           f"no_repeat_ngram_size or fewer beams, or re-export with `python -m export --top-k "
                           f"{2 * top_k}`")
    return StepOutput(log_probs, ids, out.end_log_prob)
