"""The synthetic default dataset: deterministic, captions that match the pixels, safe reuse on disk."""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.text import tokenize
from train.datasets import synthetic
from train.datasets.synthetic import (
    BACKGROUNDS,
    COLOURS,
    IMAGE_SIZE,
    POSITION_PHRASES,
    RELATIONS,
    SIZE_WORDS,
    VOCABULARY,
    caption_scene,
    generate,
    load,
    sample_scene,
    shape_outline,
)

SEED = 7
N = 40  # enough images that every position and both sizes appear


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, num_images=N, seed=SEED, progress=False)
    return out


def _meta(data_dir: Path) -> dict:
    return json.loads((data_dir / "captions.json").read_text(encoding="utf-8"))


def _pngs(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((data_dir / "images").glob("*.png"))}


def _sampled(count: int):
    """(scene, captions) pairs without rendering, to check the caption contract over many scenes cheaply."""
    for i in range(count):
        scene = sample_scene(np.random.default_rng([99, i, 0]))
        yield scene, caption_scene(scene, np.random.default_rng([99, i, 1]))


def _words(phrases) -> set[str]:
    return {w for p in phrases for w in p.split()}


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(generated, tmp_path):
    generate(tmp_path, num_images=N, seed=SEED, progress=False)
    assert _pngs(tmp_path) == _pngs(generated)
    assert len(_pngs(tmp_path)) == N
    assert (tmp_path / "captions.json").read_bytes() == (generated / "captions.json").read_bytes()


def test_different_seed_gives_different_images_and_captions(generated, tmp_path):
    generate(tmp_path, num_images=N, seed=SEED + 1, progress=False)
    ours, theirs = _pngs(tmp_path), _pngs(generated)
    assert sum(ours[name] != theirs[name] for name in ours) > N // 2
    assert [e["captions"] for e in _meta(tmp_path)["images"]] != [e["captions"] for e in _meta(generated)["images"]]


def test_image_i_does_not_depend_on_num_images(generated, tmp_path):
    generate(tmp_path, num_images=4, seed=SEED, progress=False)
    full = _pngs(generated)
    assert _pngs(tmp_path) == {name: full[name] for name in sorted(full)[:4]}
    assert _meta(tmp_path)["images"] == _meta(generated)["images"][:4]


# ---------------------------------------------------------------- captions


def test_five_distinct_captions_naming_every_shape():
    for scene, captions in _sampled(500):
        assert len(captions) == 5 and len(set(captions)) == 5, captions
        for caption in captions:
            for shape in scene.shapes:
                assert f" {shape.colour} {shape.shape} " in f" {caption} ", (caption, scene)
        assert any(scene.background in c for c in captions), captions


def test_captions_are_normalised_short_and_from_a_small_vocabulary():
    used: set[str] = set()
    for _, captions in _sampled(1500):
        for caption in captions:
            words = tokenize(caption)
            assert " ".join(words) == caption
            assert len(words) <= synthetic.MAX_CAPTION_WORDS, caption
            used.update(words)
    assert used <= VOCABULARY
    assert used == VOCABULARY, f"declared but never produced: {sorted(VOCABULARY - used)}"
    assert len(VOCABULARY) < 80


DIRECTION_WORDS = {"left", "right", "top", "bottom", "upper", "lower", "above", "over", "below", "under", "beneath",
                   "center", "middle"}


def test_captions_never_contradict_size_or_position():
    size_words = _words(w for ws in SIZE_WORDS.values() for w in ws)
    for scene, captions in _sampled(500):
        allowed = _words(p for s in scene.shapes for p in POSITION_PHRASES[s.position])
        if len(scene.shapes) == 2:
            arrangement = tuple(s.position for s in scene.shapes)
            allowed |= _words(p for ps in RELATIONS[arrangement].values() for p in ps)
        allowed_sizes = set(itertools.chain.from_iterable(SIZE_WORDS[s.size] for s in scene.shapes))
        for caption in captions:
            words = set(caption.split())
            assert not (words & DIRECTION_WORDS) - allowed, (caption, scene)
            assert not (words & size_words) - allowed_sizes, (caption, scene)


# ---------------------------------------------------------------- pixels


def _mask(pixels: np.ndarray, colour: str) -> np.ndarray:
    return (pixels == np.array(COLOURS[colour], dtype=np.uint8)).all(axis=-1)


def _check_position(position: str, cx: float, cy: float) -> None:
    half = IMAGE_SIZE / 2
    expected = {
        "left": cx < half - 12,
        "right": cx > half + 12,
        "top": cy < half - 12,
        "bottom": cy > half + 12,
        "center": abs(cx - half) < 25 and abs(cy - half) < 25,
    }
    assert expected[position], (position, cx, cy)


def _check_outline(shape: str, mask: np.ndarray) -> None:
    """The filled fraction of the bounding box (and, for triangles, which half is heavier) tells the shapes apart."""
    ys, xs = np.nonzero(mask)
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    fill = box.mean()
    ranges = {"square": (0.95, 1.0), "circle": (0.72, 0.85), "diamond": (0.42, 0.6), "triangle": (0.42, 0.6),
              "star": (0.28, 0.46)}
    low, high = ranges[shape]
    assert low <= fill <= high, (shape, fill)
    top, bottom = box[: box.shape[0] // 2].sum(), box[(box.shape[0] + 1) // 2 :].sum()
    if shape == "triangle":
        assert bottom > 1.5 * top  # points up
    if shape == "diamond":
        assert abs(bottom - top) < 0.1 * box.sum()


def test_pixels_show_the_captioned_colours_shapes_and_places(generated):
    areas: dict[str, list[int]] = {"small": [], "large": []}
    seen_positions = set()
    for entry in _meta(generated)["images"]:
        pixels = np.asarray(Image.open(generated / entry["file"]).convert("RGB"))
        assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert tuple(pixels[0, 0]) == BACKGROUNDS[entry["scene"]["background"]]
        for shape in entry["scene"]["shapes"]:
            assert all(f"{shape['colour']} {shape['shape']}" in c for c in entry["captions"])
            mask = _mask(pixels, shape["colour"])
            assert mask.sum() > 300, (entry["file"], shape)
            ys, xs = np.nonzero(mask)
            _check_position(shape["position"], xs.mean(), ys.mean())
            _check_outline(shape["shape"], mask)
            areas[shape["size"]].append(int(mask.sum()))
            seen_positions.add(shape["position"])
    assert seen_positions == set(POSITION_PHRASES)
    assert max(areas["small"]) * 1.4 < min(areas["large"]), areas


def test_palettes_are_clearly_distinct():
    shape_rgbs = [np.array(c, dtype=float) for c in COLOURS.values()]
    everything = shape_rgbs + [np.array(c, dtype=float) for c in BACKGROUNDS.values()]
    closest = min(np.linalg.norm(a - b) for a, b in itertools.combinations(everything, 2))
    assert closest > 80, closest


def test_shapes_stay_inside_the_image_and_their_half():
    half = IMAGE_SIZE // 2
    for i in range(3000):
        scene = sample_scene(np.random.default_rng([5, i, 0]))
        boxes = []
        for s in scene.shapes:
            xs, ys = zip(*shape_outline(s.shape, s.extent))
            boxes.append((s.center[0] + min(xs), s.center[1] + min(ys), s.center[0] + max(xs), s.center[1] + max(ys)))
            assert min(boxes[-1]) >= 0 and max(boxes[-1]) < IMAGE_SIZE, (scene, boxes)
        if len(scene.shapes) == 2:
            (a, b), axis = boxes, 0 if scene.shapes[0].position == "left" else 1
            assert a[axis + 2] < half <= b[axis], scene
            assert len({s.colour for s in scene.shapes}) == 2


# ---------------------------------------------------------------- files on disk


def _freeze_mtimes(root: Path) -> dict[Path, int]:
    """Set every file's mtime far in the past, so any rewrite shows whatever the clock resolution."""
    for path in root.rglob("*"):
        os.utime(path, ns=(10**9, 10**9))
    return {path: path.stat().st_mtime_ns for path in root.rglob("*")}


def test_complete_set_is_reused_without_rewriting(tmp_path):
    first = generate(tmp_path, num_images=6, seed=1, progress=False)
    before = _freeze_mtimes(tmp_path)
    again = generate(tmp_path, num_images=6, seed=1, progress=False)
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")} == before
    assert again == first


def test_different_seed_regenerates(tmp_path):
    generate(tmp_path / "set", num_images=6, seed=1, progress=False)
    before = _freeze_mtimes(tmp_path / "set")
    generate(tmp_path / "set", num_images=6, seed=2, progress=False)
    generate(tmp_path / "fresh", num_images=6, seed=2, progress=False)
    assert _meta(tmp_path / "set")["seed"] == 2
    assert _pngs(tmp_path / "set") == _pngs(tmp_path / "fresh")
    assert (tmp_path / "set" / "captions.json").stat().st_mtime_ns != before[tmp_path / "set" / "captions.json"]


def test_incomplete_set_is_regenerated(tmp_path):
    generate(tmp_path / "fresh", num_images=5, seed=3, progress=False)
    target = tmp_path / "set"
    generate(target, num_images=5, seed=3, progress=False)
    (target / "captions.json").unlink()  # as if interrupted before the last write
    (target / "images" / "scene_000001.png").write_bytes(b"half-written")
    generate(target, num_images=5, seed=3, progress=False)
    assert _pngs(target) == _pngs(tmp_path / "fresh")
    (target / "images" / "scene_000004.png").unlink()  # captions.json present, an image missing
    generate(target, num_images=5, seed=3, progress=False)
    assert _pngs(target) == _pngs(tmp_path / "fresh")


def test_smaller_set_removes_leftover_images(tmp_path):
    generate(tmp_path, num_images=6, seed=1, progress=False)
    generate(tmp_path, num_images=3, seed=1, progress=False)
    assert sorted(_pngs(tmp_path)) == ["scene_000000.png", "scene_000001.png", "scene_000002.png"]
    assert _meta(tmp_path)["num_images"] == 3 and len(_meta(tmp_path)["images"]) == 3


def test_captions_file_records_scene_and_provenance(generated):
    meta = _meta(generated)
    assert meta["format"] == synthetic.FORMAT and meta["version"] == synthetic.FORMAT_VERSION
    assert meta["generator"] == synthetic.GENERATOR_VERSION
    assert (meta["seed"], meta["num_images"]) == (SEED, N)
    entry = meta["images"][0]
    assert entry["file"] == "images/scene_000000.png"
    assert set(entry["scene"]) == {"background", "shapes"}
    assert {"shape", "colour", "size", "position"} <= set(entry["scene"]["shapes"][0])
    assert synthetic.Scene.from_json(entry["scene"]).to_json() == entry["scene"]


# ---------------------------------------------------------------- load


def test_load_round_trip(generated):
    dataset = load(generated)
    entries = _meta(generated)["images"]
    assert dataset.name == "synthetic"
    assert dataset.image_root == generated.resolve()
    assert len(dataset.images) == N and dataset.lines_read == 5 * N
    assert not dataset.issues.counts
    for image, entry in zip(dataset.images, entries):
        assert image.image_id == entry["file"]
        assert image.path.is_absolute() and image.path == (generated / entry["file"]).resolve()
        assert image.path.is_file()
        assert image.captions == entry["captions"]
        assert image.split is None
    assert generate(generated, num_images=N, seed=SEED, progress=False) == dataset


def test_load_with_separate_images_dir(generated):
    dataset = load(generated, images_dir=generated / "images")
    assert dataset.image_root == (generated / "images").resolve()
    assert dataset.images[0].image_id == "scene_000000.png"
    assert all(image.path.is_file() for image in dataset.images)


def test_load_without_captions_file_says_how_to_create_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m train prepare --dataset synthetic") as error:
        load(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "captions.json") in message
    assert "python -m train prepare --dataset synthetic" in message


def test_load_rejects_a_foreign_captions_file(tmp_path):
    (tmp_path / "captions.json").write_text(json.dumps({"format": "coco", "images": []}))
    with pytest.raises(ValueError, match="captions.json"):
        load(tmp_path)
