"""Greedy decoding: the most likely next word, every step, for all images in one batch."""
from __future__ import annotations

import numpy as np

from demo.search.step import Hypothesis, SearchOptions, StepModel, ban, normalized, take_rows


def greedy_search(
    model: StepModel, features: np.ndarray, start_id: int, end_id: int, options: SearchOptions
) -> list[Hypothesis]:
    """One caption per image; images whose caption has ended leave the batch."""
    num_images = len(features)
    state = model.initial_state(features)
    tokens = np.full(num_images, start_id, dtype=np.int64)
    live = np.arange(num_images)
    words: list[list[int]] = [[] for _ in range(num_images)]
    log_prob = np.zeros(num_images, dtype=np.float64)
    ended = np.zeros(num_images, dtype=bool)
    for t in range(options.max_length + 1):
        step_log_probs, state = model.step(tokens, state)
        step_log_probs = ban(step_log_probs, options.banned_ids)
        if t == options.max_length:  # full length: close with <end>, whatever the model prefers
            log_prob[live] += step_log_probs[:, end_id]
            break
        best = step_log_probs.argmax(axis=1)
        log_prob[live] += step_log_probs[np.arange(len(live)), best]
        stop = best == end_id
        ended[live[stop]] = True
        for image, token in zip(live[~stop], best[~stop]):
            words[image].append(int(token))
        if stop.all():
            break
        state = take_rows(state, np.flatnonzero(~stop))
        tokens = best[~stop].astype(np.int64)
        live = live[~stop]
    return [
        Hypothesis(score=normalized(float(log_prob[i]), len(words[i]), options.length_penalty),
                   log_prob=float(log_prob[i]), tokens=tuple(words[i]), finished=bool(ended[i]))
        for i in range(num_images)
    ]
