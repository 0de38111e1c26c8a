"""Batched beam search: every live beam of every image advances in one step call.

Per image there are `num_beams` beams plus one "greedy shadow" row that always
follows its own most likely word. The shadow costs one row per step and makes a
promise users can see: the beam column never shows a caption that scores worse
than the greedy one (plain beam search can prune the greedy path and end lower).

Finished captions are set aside, ranked by GNMT-normalised score (see
`SearchOptions`). An image stops as soon as no live beam can beat its n-th
best finished caption: a live beam's score can only fall, so its best possible
normalised score is bounded by its current log-probability divided by the
length penalty at the most favourable length.

The bookkeeping is whole-array numpy over all live images (A images x
(k + 1) slots); Python loops run only over captions that finish. Each step
reads the 2k best words of each row (see `demo.search.step` for why that is
exact) and ranks an image's k x 2k candidates by score, ties by (beam, token id).
"""
from __future__ import annotations

import numpy as np

from demo.search.step import Hypothesis, SearchOptions, StepModel, length_penalty, normalized, require_top_k

DEAD = -np.inf


class _Finished:
    """Captions set aside, per image, and each image's n best scores so far (for the stopping test)."""

    def __init__(self, num_images: int, options: SearchOptions):
        self.options = options
        self.captions: list[list[Hypothesis]] = [[] for _ in range(num_images)]
        self.best = np.full((num_images, options.num_return_sequences), DEAD)  # high to low

    def add(self, images: np.ndarray, log_probs: np.ndarray, words: np.ndarray, natural: np.ndarray) -> None:
        """Caption j: image images[j], its summed log-probability and its words (a (j, t) array)."""
        alpha = self.options.length_penalty
        for image, log_prob, caption, ended in zip(images.tolist(), log_probs.tolist(), words, natural.tolist()):
            score = normalized(log_prob, len(caption), alpha)
            self.captions[image].append(Hypothesis(score, log_prob, tuple(caption.tolist()), ended))
            best = self.best[image]
            if score > best[-1]:
                best[-1] = score
                best[:] = np.sort(best)[::-1]

    def n_best(self, image: int) -> list[Hypothesis]:
        """The n best distinct captions (the shadow may repeat a beam's caption)."""
        unique: dict[tuple[int, ...], Hypothesis] = {}
        for hypothesis in sorted(self.captions[image], reverse=True):
            unique.setdefault(hypothesis.tokens, hypothesis)
        return list(unique.values())[: self.options.num_return_sequences]


def beam_search(
    model: StepModel, features: np.ndarray, start_id: int, end_id: int, options: SearchOptions
) -> list[list[Hypothesis]]:
    """Up to `num_return_sequences` captions per image, best first."""
    k, width = options.num_beams, options.num_beams + 1
    require_top_k(model, 2 * k, k)
    num_images = len(features)
    state = model.initial_state(features, options.banned_ids)
    scores = np.full((num_images, width), DEAD)
    scores[:, [0, k]] = 0.0  # one beam and the shadow start; the other beams are dead until the first step
    words = np.zeros((num_images, width, options.max_length), dtype=np.int64)
    finished = _Finished(num_images, options)
    active = np.arange(num_images)
    rows = np.repeat(active, width)
    tokens = np.full(num_images * width, start_id, dtype=np.int64)
    for t in range(options.max_length + 1):
        out, state = model.step(tokens, rows, state)
        top_log_probs = out.top_log_probs.reshape(len(active), width, -1)
        top_ids = out.top_ids.reshape(len(active), width, -1)
        if t == options.max_length:
            _close_all(finished, active, scores[active], words[active, :, :t], top_ids[:, :, 0],
                       out.end_log_prob.reshape(len(active), width), end_id)
            break
        beams = _advance_beams(finished, active, scores[active], words[active, :, :t], top_log_probs, top_ids,
                               end_id, k)
        shadow = _advance_shadow(finished, active, scores[active, k], words[active, k, :t], top_log_probs[:, k, 0],
                                 top_ids[:, k, 0], end_id)
        origins = np.concatenate([beams[0], np.full((len(active), 1), k)], axis=1)
        chosen = np.concatenate([beams[1], shadow[1][:, None]], axis=1)
        words[active] = words[active[:, None], origins]
        words[active, :, t] = chosen
        scores[active] = np.concatenate([beams[2], shadow[0][:, None]], axis=1)
        going_on = ~_can_stop(scores[active], finished.best[active], t + 1, options)
        if not going_on.any():
            break
        positions = np.flatnonzero(going_on)
        rows = (positions[:, None] * width + origins[positions]).ravel()
        tokens = chosen[positions].ravel()
        active = active[positions]
    return [finished.n_best(image) for image in range(num_images)]


def _advance_beams(finished: _Finished, active: np.ndarray, scores: np.ndarray, words: np.ndarray,
                   top_log_probs: np.ndarray, top_ids: np.ndarray, end_id: int, k: int):
    """Each image's k new beams from the 2k best of its k x 2k candidates, in order: an <end> among them is
    set aside as finished, the others go on until there are k. Returns (origins, tokens, scores), each (A, k)."""
    count = 2 * k
    per_row = top_log_probs[:, :k, :count].shape[-1]  # 2k, or the whole vocabulary when that is smaller
    candidates = (scores[:, :k, None] + top_log_probs[:, :k, :count]).reshape(len(active), -1)
    # Stable: equal scores stay in (beam, token id) order, as each row arrives sorted with ties by lower id.
    order = np.argsort(-candidates, axis=1, kind="stable")[:, :count]
    image = np.arange(len(active))[:, None]
    best = candidates[image, order]
    token = top_ids[:, :k, :count].reshape(len(active), -1)[image, order]
    origin = order // per_row
    is_end = token == end_id
    going_before = np.cumsum(~is_end, axis=1) - ~is_end  # candidates that go on, ranked above this one
    taken = np.isfinite(best) & (going_before < k)
    image, rank = np.nonzero(taken & is_end)
    finished.add(active[image], best[image, rank], words[image, origin[image, rank]],
                 np.ones(len(image), dtype=bool))
    origins, tokens, new_scores = np.zeros((len(active), k), np.int64), np.full((len(active), k), end_id), \
        np.full((len(active), k), DEAD)  # fewer than k alive: the rest are dead slots
    image, rank = np.nonzero(taken & ~is_end)
    slot = going_before[image, rank]
    origins[image, slot], tokens[image, slot] = origin[image, rank], token[image, rank]
    new_scores[image, slot] = best[image, rank]
    return origins, tokens, new_scores


def _advance_shadow(finished: _Finished, active: np.ndarray, scores: np.ndarray, words: np.ndarray,
                    log_probs: np.ndarray, tokens: np.ndarray, end_id: int):
    """The shadow follows its argmax; when that is <end> it finishes and dies. Returns (scores, tokens)."""
    alive = np.isfinite(scores)
    new_scores = scores + log_probs
    ends = alive & (tokens == end_id)
    finished.add(active[ends], new_scores[ends], words[ends], np.ones(int(ends.sum()), dtype=bool))
    goes_on = alive & ~ends
    return np.where(goes_on, new_scores, DEAD), np.where(goes_on, tokens, end_id)


def _close_all(finished: _Finished, active: np.ndarray, scores: np.ndarray, words: np.ndarray,
               argmax: np.ndarray, end_log_probs: np.ndarray, end_id: int) -> None:
    """At max_length every live slot is closed with the end token's probability."""
    image, slot = np.nonzero(np.isfinite(scores))
    finished.add(active[image], scores[image, slot] + end_log_probs[image, slot], words[image, slot],
                 argmax[image, slot] == end_id)


def _can_stop(scores: np.ndarray, nth_best: np.ndarray, num_words: int, options: SearchOptions) -> np.ndarray:
    """Per image: True when no live slot can still beat the n-th best finished caption."""
    live = np.isfinite(scores)
    alpha = options.length_penalty
    bound = max(length_penalty(num_words + 1, alpha), length_penalty(options.max_length + 1, alpha))
    best_possible = np.where(live, scores, DEAD).max(axis=1) / bound
    return ~live.any(axis=1) | (best_possible <= nth_best[:, -1])
