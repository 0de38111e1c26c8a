"""The caption search as it was before the top-k step (commit 90e92d0), kept verbatim as the oracle.

It reads each step's whole distribution (N, V) and keeps its bookkeeping per
image in Python. The searches in `demo.search` must find exactly the same
captions, log-probabilities and `finished` flags (tests/demo/test_topk_search.py).
Only the names of the two entry points and the imports differ from the original.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from demo.search.step import Hypothesis, SearchOptions, length_penalty, normalized


def take_rows(state, rows):
    return {name: value[rows] for name, value in state.items()}


def ban(log_probs, banned_ids):
    if banned_ids:
        log_probs[:, list(banned_ids)] = -np.inf
    return log_probs


def full_greedy_search(
    model, features: np.ndarray, start_id: int, end_id: int, options: SearchOptions
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


DEAD = -np.inf


@dataclass
class _Beams:
    """The k beams and the shadow (last slot) of one image."""

    scores: np.ndarray  # (k + 1,) summed log-probabilities; -inf marks a dead slot
    words: list[list[int]]
    finished: list[Hypothesis]


def full_beam_search(
    model, features: np.ndarray, start_id: int, end_id: int, options: SearchOptions
) -> list[list[Hypothesis]]:
    """Up to `num_return_sequences` captions per image, best first."""
    k, width = options.num_beams, options.num_beams + 1
    num_images = len(features)
    state = take_rows(model.initial_state(features), np.repeat(np.arange(num_images), width))
    images = [_Beams(np.array([0.0] + [DEAD] * (k - 1) + [0.0]), [[] for _ in range(width)], [])
              for _ in range(num_images)]
    active = list(range(num_images))
    tokens = np.full(num_images * width, start_id, dtype=np.int64)
    for t in range(options.max_length + 1):
        log_probs, state = model.step(tokens, state)
        log_probs = ban(log_probs, options.banned_ids).reshape(len(active), width, -1)
        rows, next_tokens, still_active = [], [], []
        for position, image in enumerate(active):
            beams = images[image]
            if t == options.max_length:
                _close_all(beams, log_probs[position], end_id, options)
                continue
            origins, chosen = _advance(beams, log_probs[position], end_id, options)
            if _can_stop(beams, t + 1, options):
                continue
            still_active.append(image)
            rows.extend(position * width + origins)
            next_tokens.extend(chosen)
        if not still_active:
            break
        state = take_rows(state, np.asarray(rows))
        tokens = np.asarray(next_tokens, dtype=np.int64)
        active = still_active
    return [_best(images[i].finished, options.num_return_sequences) for i in range(num_images)]


def _advance(beams: _Beams, log_probs: np.ndarray, end_id: int, options: SearchOptions):
    """Extend the k beams (top candidates over k x V) and the shadow (its argmax); return row origins and tokens."""
    k, vocab_size = options.num_beams, log_probs.shape[-1]
    candidates = (beams.scores[:k, None] + log_probs[:k]).ravel()
    count = min(2 * k, candidates.size)  # each beam has one end token: 2k always leave k that go on
    top = np.argpartition(-candidates, count - 1)[:count]
    top = top[np.argsort(-candidates[top], kind="stable")]
    new_scores, new_words, origins, chosen = [], [], [], []
    for index in top:
        score = float(candidates[index])
        if not np.isfinite(score) or len(new_scores) == k:
            break
        origin, token = divmod(int(index), vocab_size)
        if token == end_id:
            beams.finished.append(_hypothesis(score, beams.words[origin], True, options))
            continue
        new_scores.append(score)
        new_words.append(beams.words[origin] + [token])
        origins.append(origin)
        chosen.append(token)
    while len(new_scores) < k:  # fewer than k candidates alive: pad with dead slots
        new_scores.append(DEAD)
        new_words.append([])
        origins.append(0)
        chosen.append(end_id)
    shadow_score, shadow_words = _advance_shadow(beams, log_probs[k], end_id, options)
    origins.append(k)
    chosen.append(shadow_words[-1] if shadow_words and np.isfinite(shadow_score) else end_id)
    beams.scores = np.array(new_scores + [shadow_score])
    beams.words = new_words + [shadow_words]
    return np.asarray(origins), chosen


def _advance_shadow(beams: _Beams, log_probs: np.ndarray, end_id: int, options: SearchOptions):
    k = options.num_beams
    if not np.isfinite(beams.scores[k]):
        return DEAD, []
    token = int(log_probs.argmax())
    score = float(beams.scores[k] + log_probs[token])
    if token == end_id:
        beams.finished.append(_hypothesis(score, beams.words[k], True, options))
        return DEAD, []
    return score, beams.words[k] + [token]


def _close_all(beams: _Beams, log_probs: np.ndarray, end_id: int, options: SearchOptions) -> None:
    """At max_length every live slot is closed with the end token's probability."""
    for slot, score in enumerate(beams.scores):
        if np.isfinite(score):
            natural = int(log_probs[slot].argmax()) == end_id
            beams.finished.append(
                _hypothesis(float(score + log_probs[slot, end_id]), beams.words[slot], natural, options))


def _can_stop(beams: _Beams, num_words: int, options: SearchOptions) -> bool:
    """True when no live slot can still beat the n-th best finished caption."""
    n = options.num_return_sequences
    live = beams.scores[np.isfinite(beams.scores)]
    if live.size == 0:
        return True
    if len(beams.finished) < n:
        return False
    nth_best = sorted((h.score for h in beams.finished), reverse=True)[n - 1]
    alpha = options.length_penalty
    shortest, longest = length_penalty(num_words + 1, alpha), length_penalty(options.max_length + 1, alpha)
    best_possible = float(live.max()) / max(shortest, longest)
    return best_possible <= nth_best


def _hypothesis(log_prob: float, words: list[int], finished: bool, options: SearchOptions) -> Hypothesis:
    return Hypothesis(score=normalized(log_prob, len(words), options.length_penalty), log_prob=log_prob,
                      tokens=tuple(words), finished=finished)


def _best(finished: list[Hypothesis], n: int) -> list[Hypothesis]:
    """The n best distinct captions (the shadow may repeat a beam's caption)."""
    unique: dict[tuple[int, ...], Hypothesis] = {}
    for hypothesis in sorted(finished, reverse=True):
        unique.setdefault(hypothesis.tokens, hypothesis)
    return list(unique.values())[:n]
