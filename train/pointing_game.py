"""Do the occlusion maps point at what the words name? The pointing game on the synthetic scenes.

The generator records where each shape is (`ShapeSpec.center`, `extent`, in the 224 x 224 frame the model sees),
so a word's map (`demo.occlusion`) can be checked against the box of the shape the word is about. The words
scored: the shape word and the colour word of each noun phrase that names a scene shape rightly (that shape and
that colour: a scene's shapes never share a colour), and the position phrase that follows it ("near the top"),
represented by its word the model was least sure of on the whole image (where the image, not the phrase's
grammar, decided it). Per word:
- **hit**: the map's peak (the centroid of the pixels within 1% of its largest fall) lies inside the box;
- **mass**: the share of the map's positive mass (its falls) inside the box.
Chance for both is the box's share of the image: where a uniformly placed peak lands, what a flat map puts there.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from demo.heatmap import pixel_map
from demo.occlusion import Explanation
from demo.preprocess import IMAGE_SIZE
from train.datasets.synthetic import Scene, ShapeSpec
from train.scene_scoring import ARTICLES, claim_spans

KINDS = ("shape", "colour", "position")
PEAK_WITHIN = 0.99


@dataclass(frozen=True)
class NamedWord:
    """Words of a caption about one scene shape: the shape or colour word, or a position phrase's words."""

    kind: str
    indices: tuple[int, ...]
    shape: ShapeSpec


def named_words(words: Sequence[str], scene: Scene) -> list[NamedWord]:
    """The caption's words about shapes it names rightly (see the module docstring)."""
    found: list[NamedWord] = []
    colour: tuple[str, int] | None = None
    named: ShapeSpec | None = None  # the shape the last noun phrase named rightly, until another claim comes
    for kind, value, start, stop in claim_spans(words):
        if kind == "size" or (kind == "word" and value in ARTICLES):
            continue
        if kind == "colour":
            colour = (value, start)
            continue
        if kind == "shape":
            named = next((s for s in scene.shapes if colour and (s.shape, s.colour) == (value, colour[0])), None)
            if named is not None:
                found += [NamedWord("shape", (start,), named), NamedWord("colour", (colour[1],), named)]
        elif kind == "position" and named is not None:
            found.append(NamedWord("position", tuple(range(start, stop)), named))
            named = None
        else:
            named = None
        colour = None
    return found


def box(shape: ShapeSpec) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the shape, in pixels of the model's input, clipped to it."""
    x, y = shape.center
    low = lambda v: int(max(0, v - shape.extent))  # noqa: E731
    high = lambda v: int(min(IMAGE_SIZE, v + shape.extent + 1))  # noqa: E731
    return low(y), low(x), high(y), high(x)


def score_word(explanation: Explanation, word: NamedWord) -> dict:
    """Hit, mass in the box and the box's share of the image, for one named word's map."""
    index = min(word.indices, key=lambda i: explanation.words[i].log_prob)  # the phrase's least sure word
    falls = np.clip(pixel_map(explanation.words[index].drops, explanation.grid), 0, None)
    top, left, bottom, right = box(word.shape)
    share = (bottom - top) * (right - left) / IMAGE_SIZE ** 2
    if falls.max() <= 0:
        return {"kind": word.kind, "hit": False, "mass": 0.0, "chance": share}
    rows, cols = np.nonzero(falls >= PEAK_WITHIN * falls.max())
    peak_y, peak_x = rows.mean(), cols.mean()
    hit = bool(top <= peak_y < bottom and left <= peak_x < right)
    return {"kind": word.kind, "hit": hit, "mass": float(falls[top:bottom, left:right].sum() / falls.sum()),
            "chance": share}


def score_explanations(pairs: Sequence[tuple[Explanation, Scene]]) -> dict:
    """Per kind of word: how many were scored, the hit rate, the mean mass in the box, and chance for both."""
    scores = [score_word(explanation, word) for explanation, scene in pairs
              for word in named_words(explanation.caption.split(), scene)]
    table = {}
    for kind in KINDS:
        rows = [s for s in scores if s["kind"] == kind]
        table[kind] = {"words": len(rows),
                       "pointing": float(np.mean([r["hit"] for r in rows])) if rows else None,
                       "mass_in_box": float(np.mean([r["mass"] for r in rows])) if rows else None,
                       "chance": float(np.mean([r["chance"] for r in rows])) if rows else None}
    return table
