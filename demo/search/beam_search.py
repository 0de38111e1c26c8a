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
from demo.search.step_filters import active_filters, apply_filters

DEAD = -np.inf


class _Finished:
    """Captions set aside, per image, and each image's n best scores so far (for the stopping test)."""

    def __init__(self, num_images: int, options: SearchOptions):
        self.options = options
        self.captions: list[list[Hypothesis]] = [[] for _ in range(num_images)]
        self.best = np.full((num_images, options.num_return_sequences), DEAD)  # high to low

    def add(self, images: np.ndarray, log_probs: np.ndarray, words: np.ndarray, word_log_probs: np.ndarray,
            end_log_probs: np.ndarray, natural: np.ndarray | None = None) -> None:
        """Caption j: image images[j], its summed log-probability, its words and what each cost (two (j, t)
        arrays), and <end>'s log-probability; `natural`: closed by <end> by choice (default) rather than at
        max_length."""
        alpha = self.options.length_penalty
        natural = [True] * len(images) if natural is None else natural.tolist()
        for image, log_prob, caption, costs, end, ended in zip(images.tolist(), log_probs.tolist(), words,
                                                               word_log_probs, end_log_probs.tolist(), natural):
            score = normalized(log_prob, len(caption), alpha)
            self.captions[image].append(Hypothesis(score, log_prob, tuple(caption.tolist()), ended,
                                                   tuple(costs.tolist()), end))
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
    # The live images' slots, compacted: an image that stops leaves these arrays (and the next step's rows).
    images = np.arange(num_images)
    scores = np.full((num_images, width), DEAD)
    scores[:, [0, k]] = 0.0  # one beam and the shadow start; the other beams are dead until the first step
    words = np.zeros((num_images, width, options.max_length), dtype=np.int64)
    costs = np.zeros((num_images, width, options.max_length), dtype=np.float64)  # each word's log-probability
    finished = _Finished(num_images, options)
    rows = np.repeat(images, width)
    tokens = np.full(num_images * width, start_id, dtype=np.int64)
    filters = active_filters(options)
    for t in range(options.max_length + 1):
        out, state = model.step(tokens, rows, state)
        if filters:  # row r is slot r % width of image position r // width
            out = apply_filters(filters, out, words[:, :, :t].reshape(len(images) * width, t), options, 2 * k,
                                model.vocab_size, live=np.isfinite(scores).ravel())
        top_log_probs = out.top_log_probs.reshape(len(images), width, -1)
        top_ids = out.top_ids.reshape(len(images), width, -1)
        if t == options.max_length:
            _close_all(finished, images, scores, words[:, :, :t], costs[:, :, :t], top_ids[:, :, 0],
                       out.end_log_prob.reshape(len(images), width), end_id)
            break
        origins, chosen, scores, chosen_costs = _advance(finished, images, scores, words[:, :, :t],
                                                         costs[:, :, :t], top_log_probs, top_ids, end_id, k)
        words = words[np.arange(len(images))[:, None], origins]
        costs = costs[np.arange(len(images))[:, None], origins]
        words[:, :, t], costs[:, :, t] = chosen, chosen_costs
        going_on = ~_can_stop(scores, finished.best[images, -1], t + 1, options)
        if going_on.all():  # the next rows continue this step's rows (image position * width + slot)
            rows = (np.arange(len(images))[:, None] * width + origins).ravel()
        elif going_on.any():
            keep = np.flatnonzero(going_on)
            rows = (keep[:, None] * width + origins[keep]).ravel()
            images, scores, words, costs, chosen = images[keep], scores[keep], words[keep], costs[keep], chosen[keep]
        else:
            break
        tokens = chosen.ravel()
    return [finished.n_best(image) for image in range(num_images)]


def _advance(finished: _Finished, images: np.ndarray, scores: np.ndarray, words: np.ndarray, costs: np.ndarray,
             top_log_probs: np.ndarray, top_ids: np.ndarray, end_id: int, k: int):
    """One step for every live image: its k new beams and its shadow. Returns (origins, tokens, scores, costs),
    each (A, k + 1): the slot each new slot continues, the word it adds, its summed log-probability, and the
    added word's own log-probability.

    The k beams: the 2k best of the image's k x 2k candidates, in order; an <end> among them is set aside as
    finished, the others go on until there are k (fewer when candidates run out: dead slots). The shadow follows
    its own argmax; when that is <end> it finishes and dies.
    """
    count, width = 2 * k, k + 1
    index = np.arange(len(images))[:, None]
    per_row = top_log_probs[:, :k, :count].shape[-1]  # 2k, or the whole vocabulary when that is smaller
    candidates = (scores[:, :k, None] + top_log_probs[:, :k, :count]).reshape(len(images), -1)
    # Stable: equal scores stay in (beam, token id) order, as each row arrives sorted with ties by lower id.
    order = np.argsort(-candidates, axis=1, kind="stable")[:, :count]
    best = candidates[index, order]
    cost = top_log_probs[:, :k, :count].reshape(len(images), -1)[index, order]
    token = top_ids[:, :k, :count].reshape(len(images), -1)[index, order]
    origin = order // per_row
    is_end = token == end_id
    going_before = np.cumsum(~is_end, axis=1) - ~is_end  # candidates that go on, ranked above this one
    taken = np.isfinite(best) & (going_before < k)
    shadow_score = scores[:, k] + top_log_probs[:, k, 0]
    shadow_token = top_ids[:, k, 0]
    shadow_ends = np.isfinite(shadow_score) & (shadow_token == end_id)
    ends = taken & is_end
    if ends.any():
        image, rank = np.nonzero(ends)
        finished.add(images[image], best[image, rank], words[image, origin[image, rank]],
                     costs[image, origin[image, rank]], cost[image, rank])
    if shadow_ends.any():
        finished.add(images[shadow_ends], shadow_score[shadow_ends], words[shadow_ends, k], costs[shadow_ends, k],
                     top_log_probs[shadow_ends, k, 0])
    origins = np.zeros((len(images), width), dtype=np.int64)
    tokens = np.full((len(images), width), end_id, dtype=np.int64)
    new_scores = np.full((len(images), width), DEAD)
    new_costs = np.zeros((len(images), width))
    image, rank = np.nonzero(taken & ~is_end)
    slot = going_before[image, rank]
    origins[image, slot], tokens[image, slot], new_scores[image, slot], new_costs[image, slot] = \
        origin[image, rank], token[image, rank], best[image, rank], cost[image, rank]
    shadow_goes = ~shadow_ends & np.isfinite(shadow_score)
    origins[:, k] = k
    tokens[:, k] = np.where(shadow_goes, shadow_token, end_id)
    new_scores[:, k] = np.where(shadow_goes, shadow_score, DEAD)
    new_costs[:, k] = top_log_probs[:, k, 0]
    return origins, tokens, new_scores, new_costs


def _close_all(finished: _Finished, images: np.ndarray, scores: np.ndarray, words: np.ndarray, costs: np.ndarray,
               argmax: np.ndarray, end_log_probs: np.ndarray, end_id: int) -> None:
    """At max_length every live slot is closed with the end token's probability."""
    image, slot = np.nonzero(np.isfinite(scores))
    finished.add(images[image], scores[image, slot] + end_log_probs[image, slot], words[image, slot],
                 costs[image, slot], end_log_probs[image, slot], argmax[image, slot] == end_id)


def _can_stop(scores: np.ndarray, nth_best: np.ndarray, num_words: int, options: SearchOptions) -> np.ndarray:
    """Per image: True when no live slot can still beat the n-th best finished caption (-inf while fewer than n
    have finished). With no live slot the best is -inf, which beats nothing: stop."""
    alpha = options.length_penalty
    bound = max(length_penalty(num_words + 1, alpha), length_penalty(options.max_length + 1, alpha))
    return scores.max(axis=1) / bound <= nth_best
