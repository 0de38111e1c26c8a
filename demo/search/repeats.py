"""`no_repeat_ngram_size`, as in Hugging Face `generate`: no n-gram of that size appears twice in a caption.

The words a row may not take next are those that followed its last n - 1 words earlier in the same caption.
They depend on the row's own words, so they are taken out of each row's top-K after the step
(`demo.search.step_filters`, which says why that stays exact); the step's graph and its batch-wide ban input
stay as they are.
"""
from __future__ import annotations

import numpy as np

from demo.search.step import SearchOptions


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


def removed(ids: np.ndarray, history: np.ndarray, options: SearchOptions) -> np.ndarray:
    """Which of each row's candidate words (R, K) would repeat an n-gram of the row's words so far (R, t)."""
    gone = np.zeros(ids.shape, dtype=bool)
    for row, words in enumerate(banned_next_words(history, options.no_repeat_ngram_size)):
        if words:
            gone[row] = np.isin(ids[row], list(words))
    return gone
