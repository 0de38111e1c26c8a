"""Scene scoring: the parser reads every caption the synthetic generator writes back to its scene, and a caption
that gets one attribute wrong loses exactly that attribute. No TensorFlow, no trained model."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from string import Formatter

import numpy as np
import pytest

from demo.text import tokenize
from train.captions_file import read_captions, write_captions
from train.datasets import synthetic
from train.datasets.synthetic import (
    BACKGROUNDS,
    COLOURS,
    PAIR_TEMPLATES,
    SHAPES,
    SINGLE_POSITIONS,
    SINGLE_TEMPLATES,
    Scene,
    sample_scene,
)
from train.evaluate import caption_diversity
from train.scene_scoring import (
    ATTRIBUTES,
    load_scenes,
    parse_caption,
    score_caption,
    score_captions,
)

SEED = 11
SCENES = 300


def scenes(count: int = SCENES, seed: int = SEED) -> list[Scene]:
    return [sample_scene(np.random.default_rng([seed, i, 0])) for i in range(count)]


def template_fields(template: str) -> set[str]:
    return {field for _, field, _, _ in Formatter().parse(template) if field}


def caption(template: str, scene: Scene, rng: np.random.Generator) -> list[str]:
    """One template filled in for a scene, synonyms drawn as the generator draws them."""
    return tokenize(template.format(**synthetic._fields(rng, scene)))


def templates_of(scene: Scene) -> tuple[str, ...]:
    return SINGLE_TEMPLATES if len(scene.shapes) == 1 else PAIR_TEMPLATES


def stated(template: str, scene: Scene) -> dict:
    """What a template states: per shape whether its size and position, and whether the background."""
    fields = template_fields(template)
    relation = bool(fields & {"first_rel", "second_rel", "together"})
    names = ("first", "second")[: len(scene.shapes)]
    return {
        "size": [name in fields for name in names],
        "position": [f"pos_{name}" in fields or relation for name in names],
        "background": "bg" in fields,
    }


def assert_all_right(score, scene: Scene, words, expected: dict | None = None):
    assert score.phrases == len(scene.shapes), words
    for number, shape in enumerate(score.shapes):
        assert shape.mentioned and shape.shape and shape.colour, (words, scene)
        assert shape.size is not False and shape.position is not False, (words, scene)
        if expected is not None:
            assert (shape.size is not None) == expected["size"][number], (words, score)
            assert (shape.position is not None) == expected["position"][number], (words, score)
    assert score.background is not False, (words, scene)
    if expected is not None:
        assert (score.background is not None) == expected["background"], (words, score)
    assert score.all_right


def test_every_reference_caption_scores_right_on_everything_it_states():
    """The generator's own captions of a few hundred scenes, as written to captions.json."""
    everything, their_scenes = [], []
    for index in range(SCENES):
        scene, captions, _ = synthetic.make_example(SEED, index)
        for text in captions:
            words = tokenize(text)
            assert_all_right(score_caption(words, scene), scene, words)
            everything.append(words)
            their_scenes.append(scene)
    block = score_captions(everything, their_scenes)
    for key in (*ATTRIBUTES, "background", "shapes_mentioned", "shape_count", "all_right"):
        assert block[key] == 1.0, (key, block)
    assert 0 < block["size_stated"] < 1 and 0 < block["position_stated"] < 1 and 0 < block["background_named"] < 1


def test_every_template_states_exactly_what_its_placeholders_say():
    """Each template, filled in several times (every synonym drawn) per scene: the parser finds every stated
    size, position and background, and no unstated one."""
    rng = np.random.default_rng(SEED)
    for scene in scenes():
        for template in templates_of(scene):
            for _ in range(3):
                words = caption(template, scene, rng)
                assert_all_right(score_caption(words, scene), scene, words, stated(template, scene))


def other(values, *taken):
    return next(v for v in values if v not in taken)


def wrong_scenes(scene: Scene):
    """(attribute, the scene a caption wrongly describes): one attribute of one shape changed, or the background."""
    used = {s.colour for s in scene.shapes}
    first = scene.shapes[0]
    yield "shape", replace(scene, shapes=(replace(first, shape=other(SHAPES, first.shape)), *scene.shapes[1:]))
    yield "colour", replace(scene, shapes=(replace(first, colour=other(COLOURS, *used)), *scene.shapes[1:]))
    yield "size", replace(scene, shapes=(replace(first, size=other(("small", "large"), first.size)),
                                         *scene.shapes[1:]))
    yield "background", replace(scene, background=other(BACKGROUNDS, scene.background))
    if len(scene.shapes) == 1:
        yield "position", replace(scene, shapes=(replace(first, position=other(SINGLE_POSITIONS, first.position)),))
    else:  # the two shapes swap places: the caption names the second shape where the first is, and vice versa
        second = scene.shapes[1]
        yield "position", replace(scene, shapes=(replace(second, position=first.position),
                                                 replace(first, position=second.position)))


def test_a_caption_with_one_attribute_wrong_loses_exactly_that_attribute():
    rng = np.random.default_rng(SEED + 1)
    changed_seen = set()
    for scene in scenes(120):
        for attribute, wrong in wrong_scenes(scene):
            for template in templates_of(scene):
                words = caption(template, wrong, rng)
                score = score_caption(words, scene)
                said = stated(template, scene)
                assert score.phrases == len(scene.shapes) and all(s.mentioned for s in score.shapes), words
                if attribute == "background":
                    assert score.background is (False if said["background"] else None), (words, scene)
                    assert all(s.shape and s.colour and s.size is not False and s.position is not False
                               for s in score.shapes), (words, scene)
                    continue
                assert score.background is not False, (words, scene)
                # the changed shapes: the first, and for swapped positions both
                changed = range(len(scene.shapes)) if attribute == "position" else range(1)
                for number, shape in enumerate(score.shapes):
                    for name in ATTRIBUTES:
                        value = getattr(shape, name)
                        if name in ("size", "position") and not said[name][number]:
                            assert value is None, (words, name, score)
                        elif name == attribute and number in changed:
                            assert value is False, (words, name, score)
                            changed_seen.add(name)
                        else:
                            assert value is True, (words, name, scene, score)
    assert changed_seen == set(ATTRIBUTES)


def test_what_the_parser_reads_from_model_like_captions():
    circle = synthetic.ShapeSpec("circle", "blue", "small", "left", (50, 112), 22)
    square = synthetic.ShapeSpec("square", "red", "large", "right", (170, 112), 40)
    pair = Scene("light blue", (circle, square))
    claims = parse_caption("a light blue background with a small blue circle".split())
    assert claims.background == "light blue" and [(p.colour, p.shape) for p in claims.phrases] == [("blue", "circle")]
    # "blue background" is no scene's background: named, and wrong
    assert score_caption("a blue circle on a blue background".split(), pair).background is False
    # one shape never mentioned: wrong on every attribute, counted in size's and position's shares
    block = score_captions([["a", "small", "blue", "circle", "on", "the", "left"]], [pair])
    assert block["shape"] == block["colour"] == block["size"] == block["position"] == 0.5
    assert block["shapes_mentioned"] == 0.5 and block["shape_count"] == 0.0 and block["all_right"] == 0.0
    assert block["background"] is None and block["background_named"] == 0.0
    # the right-hand shape named first, through the relation
    score = score_caption("a big red square to the right of a little blue circle".split(), pair)
    assert score.all_right
    # a relation the other way round: both positions wrong, the rest right
    score = score_caption("a big red square to the left of a little blue circle".split(), pair)
    assert [s.position for s in score.shapes] == [False, False] and all(s.shape and s.colour for s in score.shapes)
    # nothing recognisable: nothing mentioned
    empty = score_caption([], pair)
    assert empty.phrases == 0 and not any(s.mentioned for s in empty.shapes) and empty.background is None
    # an extra shape costs no attribute, only shape_count
    single = Scene("white", (replace(circle, position="center"),))
    block = score_captions([["a", "blue", "circle", "and", "a", "red", "star"]], [single])
    assert block["shape"] == block["colour"] == 1.0 and block["shape_count"] == 0.0 and block["size"] is None


def test_caption_diversity():
    captions = [["a", "red", "circle"], ["a", "blue", "star"], ["a", "red", "circle"], ["a", "red", "circle"]]
    assert caption_diversity(captions) == {"distinct_captions": 2, "distinct_share": 0.5,
                                           "most_common_caption": "a red circle", "most_common_share": 0.75}


# ---------------------------------------------------------------- the scene records of a run


@pytest.fixture
def synthetic_run(tmp_path) -> tuple[Path, list[str]]:
    """A generated set of 6 scenes and a run captions.json pointing at it (no features, no model)."""
    data = tmp_path / "synthetic"
    dataset = synthetic.generate(data, num_images=6, seed=SEED, progress=False)
    ids = [image.image_id for image in dataset.images]
    write_captions(tmp_path / "captions.json", "synthetic", dataset.image_root,
                   [(image.image_id, "test", image.captions) for image in dataset.images])
    return tmp_path, ids


def test_the_scenes_of_a_run_are_read_from_the_generated_set(synthetic_run):
    run, ids = synthetic_run
    loaded = load_scenes(read_captions(run / "captions.json"), ids)
    assert loaded.not_scored is None
    assert list(loaded.scenes) == [synthetic.make_example(SEED, i)[0] for i in range(6)]
    entries = read_captions(run / "captions.json").images
    block = loaded.score([tokenize(e.captions[0]) for e in entries])
    assert block["shape"] == block["colour"] == 1.0 and block["shapes_scored"] == sum(
        len(s.shapes) for s in loaded.scenes)


@pytest.mark.parametrize("damage, says", [
    (lambda doc: None, "not found"),
    (lambda doc: "{not json", "not valid JSON"),
    (lambda doc: {**doc, "format": "other"}, "is not a synthetic-scenes v1 file"),
    (lambda doc: {**doc, "images": doc["images"][1:]}, "records no scene for images/scene_000000.png"),
    (lambda doc: {**doc, "images": [{**doc["images"][0], "scene": None}, *doc["images"][1:]]}, "damaged"),
    (lambda doc: {**doc, "images": [{**doc["images"][0], "scene": {**doc["images"][0]["scene"],
                                                                   "background": "purple"}},
                                    *doc["images"][1:]]}, "background 'purple'"),
    (lambda doc: {**doc, "images": [{**doc["images"][0], "scene": {**doc["images"][0]["scene"], "shapes": [
        {**doc["images"][0]["scene"]["shapes"][0], "shape": ["circle"]}]}}, *doc["images"][1:]]}, "shape 0: shape"),
    (lambda doc: {**doc, "images": [{**doc["images"][0], "scene": {**doc["images"][0]["scene"], "shapes": [
        {**doc["images"][0]["scene"]["shapes"][0], "center": 3}]}}, *doc["images"][1:]]}, "TypeError"),
])
def test_a_missing_or_damaged_scene_record_is_a_note_not_a_traceback(synthetic_run, damage, says):
    run, ids = synthetic_run
    path = run / "synthetic" / synthetic.CAPTIONS_FILE
    damaged = damage(json.loads(path.read_text()))
    if damaged is None:
        path.unlink()
    else:
        path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    loaded = load_scenes(read_captions(run / "captions.json"), ids)
    assert loaded.not_scored.startswith("scenes not scored") and says in loaded.not_scored, loaded.not_scored
    assert str(path) in loaded.not_scored and "python -m train prepare" in loaded.not_scored
    assert loaded.score([["a"]] * len(ids)) == {"not_scored": loaded.not_scored}


def test_a_run_of_another_dataset_has_no_scenes(synthetic_run):
    run, ids = synthetic_run
    doc = json.loads((run / "captions.json").read_text())
    (run / "captions.json").write_text(json.dumps({**doc, "dataset": "flickr8k"}))
    assert load_scenes(read_captions(run / "captions.json"), ids) is None
