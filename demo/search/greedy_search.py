"""Greedy decoding: the most likely next word, every step, for all images in one batch."""
from __future__ import annotations

import numpy as np

from demo.search.step import Hypothesis, SearchOptions, StepModel, normalized, require_top_k
from demo.search.step_filters import active_filters, apply_filters


def greedy_search(
    model: StepModel, features: np.ndarray, start_id: int, end_id: int, options: SearchOptions
) -> list[Hypothesis]:
    """One caption per image; images whose caption has ended leave the batch."""
    require_top_k(model, 1, 1)
    num_images = len(features)
    state = model.initial_state(features, options.banned_ids)
    rows = np.arange(num_images)
    tokens = np.full(num_images, start_id, dtype=np.int64)
    live = np.arange(num_images)  # the image of each row
    words = np.zeros((num_images, options.max_length), dtype=np.int64)
    word_log_probs = np.zeros((num_images, options.max_length), dtype=np.float64)
    end_log_prob = np.zeros(num_images, dtype=np.float64)
    lengths = np.zeros(num_images, dtype=np.int64)
    log_prob = np.zeros(num_images, dtype=np.float64)
    ended = np.zeros(num_images, dtype=bool)
    filters = active_filters(options)
    for t in range(options.max_length + 1):
        out, state = model.step(tokens, rows, state)
        if filters:
            out = apply_filters(filters, out, words[live, :t], options, 1, model.vocab_size)
        if t == options.max_length:  # full length: close with <end>, whatever the model prefers
            log_prob[live] += out.end_log_prob
            end_log_prob[live] = out.end_log_prob
            break
        best, best_log_prob = out.top_ids[:, 0], out.top_log_probs[:, 0]
        log_prob[live] += best_log_prob
        stop = best == end_id
        ended[live[stop]] = True
        end_log_prob[live[stop]] = best_log_prob[stop]
        going_on = live[~stop]
        words[going_on, t] = best[~stop]
        word_log_probs[going_on, t] = best_log_prob[~stop]
        lengths[going_on] += 1
        if stop.all():
            break
        rows, tokens, live = np.flatnonzero(~stop), best[~stop], going_on
    return [Hypothesis(score=normalized(float(log_prob[i]), int(lengths[i]), options.length_penalty),
                       log_prob=float(log_prob[i]), tokens=tuple(int(w) for w in words[i, :lengths[i]]),
                       finished=bool(ended[i]), word_log_probs=tuple(word_log_probs[i, :lengths[i]].tolist()),
                       end_log_prob=float(end_log_prob[i]))
            for i in range(num_images)]
