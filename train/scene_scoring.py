"""What a synthetic caption gets right: each caption read back into what it claims, and scored against its scene.

BLEU rewards the templates' phrasing; on the synthetic scenes it stays high while about every other
shape word is wrong. The generator records every image's scene (`train.datasets.synthetic`: background,
and per shape its shape, colour, size and position) in the generated set's own `captions.json`, so
evaluation can check each claim. The parser knows only the generator's own vocabularies (`COLOURS`,
`BACKGROUNDS`, `SHAPES`, `SIZE_WORDS`, `POSITION_PHRASES`, `RELATIONS`, and the background noun of the
templates), imported, never copied: a template or synonym added there is parsed here, and the test that
reads every reference caption of a few hundred scenes back to 100% fails on one this parser misreads.

**Reading a caption** (a list of normalised words). Words are matched left to right against every known
phrase, the longest first ("to the left of" is a relation, "to the left" a position; "light blue
background" names the background, while "blue" alone is a colour; "light" alone is ignored). A *noun
phrase* is a shape word with the size and colour words directly in front of it (articles may sit
between; any other word ends the phrase's modifiers, and the one nearest the shape word wins). A
position phrase gives the position of the noun phrase just before it; a relation ("to the left of",
"above", "below" ...) gives the phrase before it one position of its arrangement and the phrase after it
the other (so "{second} {second_rel} {first}", which names the second shape first, reads right); a
together-phrase ("side by side", "one above the other") gives the two phrases before it the
arrangement's first and second positions, in caption order, as the templates use it. A phrase keeps the
first position it is given. "<background> background" names the background; "<colour> background" or a
bare "background" names one that no scene has (wrong). Other words (articles, "there is", "and",
"with" ...) carry no claim.

**Matching noun phrases to the scene's shapes.** Caption order is not scene order (a relation may name
the right-hand shape first), and matching by the claimed position would make every position right by
construction. So every assignment of distinct phrases to the scene's one or two shapes is tried and the
most favourable is scored: the most attributes right, then the most colours right (a scene's shapes never
share a colour, so on a tie the colour decides which shape a phrase means), then caption order. A shape
no phrase is assigned to (the caption never mentions it) counts as wrong for every attribute. Extra
phrases (more shapes named than the scene has) cost no attribute; `shape_count` reports them.

**What is scored, per shape:** the shape word and the colour (every reference caption states both);
the size and the position only where the caption states them (the `*_bare` templates name no size, and
"... on a grey background" no position): a stated attribute is right or wrong, an unstated one is left
out of that share, and `size_stated` / `position_stated` say how often they were stated. A shape never
mentioned counts as stated and wrong for both. The background is scored over the captions that name
one (`background`), beside the share that do (`background_named`). `all_right`: the share of images
whose caption names exactly the scene's shapes and gets every stated attribute, background included,
right.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Formatter

from demo.artifacts import read_json
from demo.errors import CaptionerError
from demo.text import tokenize
from train.captions_file import RunCaptions
from train.datasets import synthetic
from train.datasets.synthetic import (
    BACKGROUNDS,
    COLOURS,
    PAIR_TEMPLATES,
    POSITION_PHRASES,
    RELATIONS,
    SHAPES,
    SINGLE_TEMPLATES,
    SIZE_WORDS,
    Scene,
)

ATTRIBUTES = ("shape", "colour", "size", "position")
ARTICLES = ("a", "an")  # the generator's articles (synthetic._noun_phrase)


def _background_noun() -> str:
    """The word the templates put after the background's name ("on a grey background")."""
    nouns = set()
    for template in SINGLE_TEMPLATES + PAIR_TEMPLATES:
        parsed = list(Formatter().parse(template))
        for (_, field, _, _), (literal, _, _, _) in zip(parsed, parsed[1:]):
            if field == "bg":
                nouns.add(tokenize(literal)[0])
    if len(nouns) != 1:
        raise RuntimeError(f"the synthetic templates name the background with {sorted(nouns)}, not one noun")
    return nouns.pop()


BACKGROUND_NOUN = _background_noun()


def _lexicon() -> dict[tuple[str, ...], tuple[str, object]]:
    """Every phrase that carries a claim, as a word tuple → (kind, value)."""
    entries: list[tuple[str, str, object]] = []
    entries += [(word, "size", size) for size, words in SIZE_WORDS.items() for word in words]
    entries += [(colour, "colour", colour) for colour in COLOURS]
    entries += [(shape, "shape", shape) for shape in SHAPES]
    entries += [(f"{name} {BACKGROUND_NOUN}", "background", name) for name in (*BACKGROUNDS, *COLOURS)]
    entries += [(BACKGROUND_NOUN, "background", None)]
    entries += [(phrase, "position", position) for position, phrases in POSITION_PHRASES.items()
                for phrase in phrases]
    for (first, second), relation in RELATIONS.items():
        entries += [(phrase, "relation", (first, second)) for phrase in relation["first_rel"]]
        entries += [(phrase, "relation", (second, first)) for phrase in relation["second_rel"]]
        entries += [(phrase, "together", (first, second)) for phrase in relation["together"]]
    lexicon: dict[tuple[str, ...], tuple[str, object]] = {}
    for phrase, kind, value in entries:
        words = tuple(tokenize(phrase))
        if lexicon.setdefault(words, (kind, value)) != (kind, value):
            raise RuntimeError(f"the synthetic vocabularies give {phrase!r} two meanings: "
                               f"{lexicon[words]} and {(kind, value)}")
    return lexicon


LEXICON = _lexicon()
_LONGEST = max(len(words) for words in LEXICON)


@dataclass(frozen=True)
class PhraseClaim:
    """One noun phrase: its shape word, and the colour, size and position it states (None: not stated)."""

    shape: str
    colour: str | None = None
    size: str | None = None
    position: str | None = None


@dataclass(frozen=True)
class CaptionClaims:
    phrases: tuple[PhraseClaim, ...]
    names_background: bool
    background: str | None  # None when named by a word that is no background name


def claim_spans(words: Sequence[str]) -> list[tuple[str, object, int, int]]:
    """(kind, value, start, stop) per recognised phrase, longest match first, `words[start:stop]` its words;
    ("word", w, i, i + 1) for anything else."""
    found, at = [], 0
    while at < len(words):
        for length in range(min(_LONGEST, len(words) - at), 0, -1):
            claim = LEXICON.get(tuple(words[at:at + length]))
            if claim is not None:
                found.append((*claim, at, at + length))
                at += length
                break
        else:
            found.append(("word", words[at], at, at + 1))
            at += 1
    return found


def _claims(words: Sequence[str]) -> list[tuple[str, object]]:
    """(kind, value) per recognised phrase, as `claim_spans` finds them."""
    return [(kind, value) for kind, value, _, _ in claim_spans(words)]


def parse_caption(words: Sequence[str]) -> CaptionClaims:
    """What a caption claims about its scene (see the module docstring for the rules)."""
    phrases: list[dict] = []
    modifiers: dict[str, str | None] = {"size": None, "colour": None}
    incoming = None  # the position a relation gives the next noun phrase
    names_background, background = False, None
    for kind, value in _claims(words):
        if kind in modifiers:
            modifiers[kind] = value
            continue
        if kind == "word" and value in ARTICLES:
            continue
        if kind == "shape":
            phrases.append({"shape": value, **modifiers, "position": incoming})
            incoming = None
        elif kind == "position":
            if phrases and phrases[-1]["position"] is None:
                phrases[-1]["position"] = value
        elif kind == "relation":
            if phrases and phrases[-1]["position"] is None:
                phrases[-1]["position"] = value[0]
            incoming = value[1]
        elif kind == "together":
            for phrase, position in zip(phrases[-2:] if len(phrases) >= 2 else [], value):
                if phrase["position"] is None:
                    phrase["position"] = position
        elif kind == "background" and not names_background:
            names_background, background = True, value
        modifiers = {"size": None, "colour": None}
    return CaptionClaims(tuple(PhraseClaim(**p) for p in phrases), names_background, background)


# ---------------------------------------------------------------- scoring one caption


@dataclass(frozen=True)
class ShapeScore:
    """One scene shape: each attribute right (True), wrong (False) or not stated (None; size and position)."""

    mentioned: bool
    shape: bool
    colour: bool
    size: bool | None
    position: bool | None


@dataclass(frozen=True)
class CaptionScore:
    shapes: tuple[ShapeScore, ...]
    phrases: int  # noun phrases in the caption
    background: bool | None  # None: the caption names no background

    @property
    def all_right(self) -> bool:
        return (self.phrases == len(self.shapes) and self.background is not False
                and all(s.shape and s.colour and s.size is not False and s.position is not False
                        for s in self.shapes))


_UNMENTIONED = ShapeScore(mentioned=False, shape=False, colour=False, size=False, position=False)


def _shape_score(phrase: PhraseClaim | None, truth) -> ShapeScore:
    if phrase is None:
        return _UNMENTIONED
    return ShapeScore(
        mentioned=True,
        shape=phrase.shape == truth.shape,
        colour=phrase.colour == truth.colour,
        size=None if phrase.size is None else phrase.size == truth.size,
        position=None if phrase.position is None else phrase.position == truth.position,
    )


def _rank(scores: tuple[ShapeScore, ...]) -> tuple[int, int]:
    right = sum(getattr(s, a) is True for s in scores for a in ATTRIBUTES)
    return right, sum(s.colour for s in scores)


def score_caption(words: Sequence[str], scene: Scene) -> CaptionScore:
    """Score one caption against its scene, under the most favourable assignment of phrases to shapes."""
    claims = parse_caption(words)
    candidates = list(range(len(claims.phrases))) + [None] * len(scene.shapes)
    best = None
    for assignment in dict.fromkeys(itertools.permutations(candidates, len(scene.shapes))):
        scores = tuple(_shape_score(None if i is None else claims.phrases[i], truth)
                       for i, truth in zip(assignment, scene.shapes))
        if best is None or _rank(scores) > _rank(best):
            best = scores
    background = claims.background == scene.background if claims.names_background else None
    return CaptionScore(shapes=best, phrases=len(claims.phrases), background=background)


# ---------------------------------------------------------------- scoring a split


def _share(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def score_captions(captions: Sequence[Sequence[str]], scenes: Sequence[Scene]) -> dict:
    """The `scene` block of metrics.json: shares of shapes (and images) whose attributes a caption got right."""
    if len(captions) != len(scenes):
        raise ValueError(f"{len(captions)} captions for {len(scenes)} scenes")
    scored = [score_caption(words, scene) for words, scene in zip(captions, scenes)]
    shapes = [s for caption in scored for s in caption.shapes]
    named = [c.background for c in scored if c.background is not None]
    block = {"images": len(scored), "shapes_scored": len(shapes)}
    for attribute in ATTRIBUTES:
        stated = [getattr(s, attribute) for s in shapes if getattr(s, attribute) is not None]
        block[attribute] = _share(sum(stated), len(stated))
        if attribute in ("size", "position"):
            block[f"{attribute}_stated"] = _share(len(stated), len(shapes))
    block |= {
        "background": _share(sum(named), len(named)),
        "background_named": _share(len(named), len(scored)),
        "shapes_mentioned": _share(sum(s.mentioned for s in shapes), len(shapes)),
        "shape_count": _share(sum(c.phrases == len(c.shapes) for c in scored), len(scored)),
        "all_right": _share(sum(c.all_right for c in scored), len(scored)),
    }
    return block


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def summary(block: dict) -> str:
    """One line for the logs: "shape word 53%, colour 96%, ..." or why nothing was scored."""
    if "not_scored" in block:
        return "scenes not scored"
    return (f"shape word {_percent(block['shape'])}, colour {_percent(block['colour'])}, "
            f"size {_percent(block['size'])}, position {_percent(block['position'])}, "
            f"background {_percent(block['background'])} (named by {_percent(block['background_named'])})")


def comparison(before: dict, after: dict) -> str:
    """"shape word 53% -> 51%, ..." for two blocks of the same images (the export's fp32 vs int8)."""
    if "not_scored" in before or "not_scored" in after:
        return before.get("not_scored") or after["not_scored"]
    labels = {"shape": "shape word", "colour": "colour", "size": "size", "position": "position",
              "background": "background"}
    return ", ".join(f"{label} {_percent(before[key])} -> {_percent(after[key])}" for key, label in labels.items())


# ---------------------------------------------------------------- the scene records


@dataclass(frozen=True)
class Scenes:
    """The scenes of the images being scored, in their order, or why they cannot be scored."""

    scenes: tuple[Scene, ...] = ()
    not_scored: str | None = None

    def score(self, captions: Sequence[Sequence[str]]) -> dict:
        if self.not_scored is not None:
            return {"not_scored": self.not_scored}
        return score_captions(captions, self.scenes)


class SceneRecordError(CaptionerError):
    """A synthetic run's scene records are missing or damaged."""


def load_scenes(captions: RunCaptions, image_ids: Sequence[str]) -> Scenes | None:
    """The recorded scene of each image, read once from the generated set's captions.json.

    None when the run's dataset is not the synthetic one (nothing to score). A missing or damaged
    record gives `Scenes` with a `not_scored` reason (naming the file, and the image where it is one
    entry), so that evaluation still writes its other figures.
    """
    if captions.dataset != synthetic.NAME:
        return None
    try:
        return Scenes(scenes=tuple(_read_scenes(Path(captions.image_root), image_ids)))
    except SceneRecordError as exc:
        return Scenes(not_scored=str(exc))


def _read_scenes(image_root: Path, image_ids: Sequence[str]) -> list[Scene]:
    path = image_root / synthetic.CAPTIONS_FILE
    fix = f"regenerate the set (`{synthetic.PREPARE_HINT}` with this run's --seed and --num-images)"
    try:
        doc = read_json(path, "synthetic scenes file")
    except CaptionerError as exc:
        raise SceneRecordError(f"scenes not scored: {exc}; {fix}") from exc
    if (not isinstance(doc, dict) or doc.get("format") != synthetic.FORMAT
            or doc.get("version") != synthetic.FORMAT_VERSION or not isinstance(doc.get("images"), list)):
        raise SceneRecordError(f"scenes not scored: {path} is not a {synthetic.FORMAT} "
                               f"v{synthetic.FORMAT_VERSION} file; {fix}")
    by_file = {entry["file"]: entry.get("scene") for entry in doc["images"]
               if isinstance(entry, dict) and isinstance(entry.get("file"), str)}
    scenes = []
    for image_id in image_ids:
        if image_id not in by_file:
            raise SceneRecordError(f"scenes not scored: {path} records no scene for {image_id}; {fix}")
        problem = _scene_problem(by_file[image_id])
        if problem:
            raise SceneRecordError(f"scenes not scored: the scene of {image_id} in {path} is damaged "
                                   f"({problem}); {fix}")
        scenes.append(Scene.from_json(by_file[image_id]))
    return scenes


def _scene_problem(data) -> str | None:
    """What is wrong with one recorded scene, or None when every value is one the generator draws."""
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        return "no scene, or no list of shapes"
    if data.get("background") not in BACKGROUNDS:
        return f"background {data.get('background')!r}"
    if len(data["shapes"]) not in (1, 2):
        return f"{len(data['shapes'])} shapes"
    allowed = {"shape": SHAPES, "colour": COLOURS, "size": SIZE_WORDS, "position": POSITION_PHRASES}
    for number, shape in enumerate(data["shapes"]):
        if not isinstance(shape, dict):
            return f"shape {number} is not an object"
        for key, values in allowed.items():
            if not isinstance(shape.get(key), str) or shape[key] not in values:
                return f"shape {number}: {key} {shape.get(key)!r}"
    try:
        Scene.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
