"""Synthetic captioned scenes: the project's embedded, offline default dataset.

Real caption datasets (Flickr8k, COCO) are large downloads and take hours of
training before a captioner says anything sensible. This generator needs no
network and no files: it draws simple scenes and describes them, so that a
randomly initialised VGG16 + LSTM merge captioner can learn to describe an
image within minutes on one GPU, and every stage of the pipeline (prepare,
features, training, evaluation, ONNX export, the demo) can be exercised end to
end on a fresh machine.

What varies from image to image, all drawn from `numpy.random.default_rng`
seeded with (seed, image index), so image i is the same whatever the number of
images generated:

* one or two shapes (circle, square, triangle, star, diamond);
* each shape's colour (seven clearly distinct hues; the two shapes of a scene
  never share a colour, and no shape is ever the background's colour);
* each shape's size (small or large, areas differing by well over 1.5x even
  across shapes) with a little jitter;
* placement: one shape on the left, right, top, bottom or in the center; two
  shapes side by side (left and right) or one above the other (top and
  bottom), with jitter along both axes;
* the plain background (white, black, grey, light blue).

Each image gets five distinct captions built from several templates and
synonyms ("large"/"big", "on the left"/"on the left side", "above"/"over");
every caption names each shape's colour and shape, at least one names the
background, all are at most 20 words and already normalised (they tokenise to
themselves), and the whole vocabulary stays under 80 words, small enough to
learn in minutes.

The generated set is written as `images/scene_NNNNNN.png` plus `captions.json`,
which also records the structured description of every scene so that
evaluation can check what a caption got right, not only its n-gram overlap.
`captions.json` is written last and atomically: a directory without it is an
incomplete set and is regenerated, never reused.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from string import Formatter

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from demo.artifacts import atomic_write_json, read_json
from demo.errors import BadInput, DamagedFile, MissingFile
from demo.text import tokenize
from train.datasets.records import LoadedDataset, ParseIssues, group_captions

NAME = "synthetic"
GENERATOR_VERSION = "synthetic-scenes-v1"  # bump whenever a given (seed, index) would draw or caption differently
FORMAT = "synthetic-scenes"
FORMAT_VERSION = 1
CAPTIONS_FILE = "captions.json"
IMAGES_SUBDIR = "images"
IMAGE_SIZE = 224
CAPTIONS_PER_IMAGE = 5
MAX_CAPTION_WORDS = 20
PNG_COMPRESS_LEVEL = 1  # speed over size: 3000 images stay well under a minute
PREPARE_HINT = "python -m train prepare --dataset synthetic"

RGB = tuple[int, int, int]

COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (130, 40, 170),
    "orange": (245, 130, 20),
    "pink": (245, 120, 190),
}
BACKGROUNDS: dict[str, RGB] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "light blue": (170, 210, 240),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond")

# The extent (circle radius, square half-side, distance centre-to-vertex) is
# the size's base extent times the shape's scale. The scales make thin shapes
# (triangle, star) look about as big as a circle while keeping every small
# shape's area well below every large shape's area.
SHAPE_SCALE = {"circle": 1.0, "square": 0.85, "triangle": 1.2, "star": 1.12, "diamond": 1.05}
SIZE_EXTENT = {"small": (20, 25), "large": (44, 50)}  # base extent range in pixels, inclusive
STAR_INNER_RATIO = 0.45  # fatter than a pentagram, so a small star is still a star after downscaling
EDGE_MARGIN = 2  # pixels kept free between a shape and its region's border

SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
POSITION_PHRASES = {
    "left": ("on the left", "on the left side", "to the left"),
    "right": ("on the right", "on the right side", "to the right"),
    "top": ("at the top", "near the top", "in the upper half"),
    "bottom": ("at the bottom", "near the bottom", "in the lower half"),
    "center": ("in the center", "in the middle"),
}
SINGLE_POSITIONS = ("left", "right", "top", "bottom", "center")
ARRANGEMENTS = (("left", "right"), ("top", "bottom"))
RELATIONS = {
    ("left", "right"): {
        "first_rel": ("to the left of",),
        "second_rel": ("to the right of",),
        "together": ("side by side", "next to each other"),
    },
    ("top", "bottom"): {
        "first_rel": ("above", "over"),
        "second_rel": ("below", "under", "beneath"),
        "together": ("one above the other",),
    },
}

# {first}/{second}: article, size, colour and shape; *_bare: without the size.
SINGLE_TEMPLATES = (
    "{first} {pos_first}",
    "there is {first} {pos_first}",
    "a picture of {first} {pos_first}",
    "{first_bare} {pos_first}",
    "{first} on a {bg} background",
    "a {bg} background with {first} {pos_first}",
)
PAIR_TEMPLATES = (
    "{first} {pos_first} and {second} {pos_second}",
    "there is {first} {pos_first} and {second} {pos_second}",
    "{first} {first_rel} {second}",
    "{second} {second_rel} {first}",
    "{first_bare} and {second_bare} {together}",
    "{first} and {second} on a {bg} background",
    "a {bg} background with {first} and {second}",
)


@dataclass(frozen=True)
class ShapeSpec:
    """One drawn shape; `center` and `extent` are in pixels so tests and evaluation can locate it."""

    shape: str
    colour: str
    size: str
    position: str
    center: tuple[int, int]
    extent: int


@dataclass(frozen=True)
class Scene:
    """What one image shows; shapes are ordered left-to-right or top-to-bottom."""

    background: str
    shapes: tuple[ShapeSpec, ...]

    def to_json(self) -> dict:
        """Plain JSON types (center as a list) so a scene read back from captions.json compares equal."""
        return {
            "background": self.background,
            "shapes": [{**asdict(s), "center": list(s.center)} for s in self.shapes],
        }

    @classmethod
    def from_json(cls, data: dict) -> Scene:
        shapes = tuple(
            ShapeSpec(**{**s, "center": tuple(s["center"])}) for s in data["shapes"]
        )
        return cls(background=data["background"], shapes=shapes)


@dataclass(frozen=True)
class _Slot:
    """Where a shape at a named position goes: a target centre, jitter, and the region it must stay inside."""

    target: tuple[int, int]
    jitter: tuple[int, int]
    region: tuple[int, int, int, int]  # x0, y0, x1, y1


_HALF = IMAGE_SIZE // 2
_QUARTER = IMAGE_SIZE // 4
_FULL = (0, 0, IMAGE_SIZE, IMAGE_SIZE)
SINGLE_SLOTS = {
    "left": _Slot((_QUARTER, _HALF), (10, 30), _FULL),
    "right": _Slot((IMAGE_SIZE - _QUARTER, _HALF), (10, 30), _FULL),
    "top": _Slot((_HALF, _QUARTER), (30, 10), _FULL),
    "bottom": _Slot((_HALF, IMAGE_SIZE - _QUARTER), (30, 10), _FULL),
    "center": _Slot((_HALF, _HALF), (10, 10), _FULL),
}
PAIR_SLOTS = {
    "left": _Slot((_QUARTER, _HALF), (8, 30), (0, 0, _HALF, IMAGE_SIZE)),
    "right": _Slot((IMAGE_SIZE - _QUARTER, _HALF), (8, 30), (_HALF, 0, IMAGE_SIZE, IMAGE_SIZE)),
    "top": _Slot((_HALF, _QUARTER), (30, 8), (0, 0, IMAGE_SIZE, _HALF)),
    "bottom": _Slot((_HALF, IMAGE_SIZE - _QUARTER), (30, 8), (0, _HALF, IMAGE_SIZE, IMAGE_SIZE)),
}


def _template_words(templates: tuple[str, ...]) -> set[str]:
    words: set[str] = set()
    for template in templates:
        for literal, _, _, _ in Formatter().parse(template):
            words.update(tokenize(literal))
    return words


def _phrase_words(*groups) -> set[str]:
    return {word for group in groups for phrase in group for word in tokenize(phrase)}


VOCABULARY: frozenset[str] = frozenset(
    _template_words(SINGLE_TEMPLATES + PAIR_TEMPLATES)
    | _phrase_words(COLOURS, BACKGROUNDS, SHAPES, *SIZE_WORDS.values(), *POSITION_PHRASES.values())
    | _phrase_words(*(phrases for rel in RELATIONS.values() for phrases in rel.values()))
    | {"a", "an"}
)


# ---------------------------------------------------------------- scenes


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def shape_outline(shape: str, extent: int) -> list[tuple[int, int]]:
    """Polygon vertices relative to the centre; a circle is given by its bounding square."""
    if shape in ("circle", "square"):
        return [(-extent, -extent), (extent, -extent), (extent, extent), (-extent, extent)]
    if shape == "diamond":
        return [(0, -extent), (extent, 0), (0, extent), (-extent, 0)]
    if shape == "triangle":
        angles, radii = np.deg2rad([-90, 30, 150]), [extent] * 3
    elif shape == "star":
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = [extent if k % 2 == 0 else extent * STAR_INNER_RATIO for k in range(10)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return [(round(r * np.cos(a)), round(r * np.sin(a))) for a, r in zip(angles, radii)]


def _place(rng: np.random.Generator, slot: _Slot, outline: list[tuple[int, int]]) -> tuple[int, int]:
    """Jitter the slot's target, then clamp so the whole outline stays inside the slot's region."""
    xs, ys = [p[0] for p in outline], [p[1] for p in outline]
    x0, y0, x1, y1 = slot.region
    center = []
    for target, jitter, low, high, lo_off, hi_off in (
        (slot.target[0], slot.jitter[0], x0, x1, min(xs), max(xs)),
        (slot.target[1], slot.jitter[1], y0, y1, min(ys), max(ys)),
    ):
        lo, hi = low + EDGE_MARGIN - lo_off, high - 1 - EDGE_MARGIN - hi_off
        if lo > hi:
            raise ValueError(f"shape of extent {max(xs)} does not fit region {slot.region}")
        center.append(int(np.clip(target + int(rng.integers(-jitter, jitter + 1)), lo, hi)))
    return center[0], center[1]


def _sample_shape(rng: np.random.Generator, colour: str, position: str, slot: _Slot) -> ShapeSpec:
    shape, size = _pick(rng, SHAPES), _pick(rng, tuple(SIZE_EXTENT))
    low, high = SIZE_EXTENT[size]
    extent = round(int(rng.integers(low, high + 1)) * SHAPE_SCALE[shape])
    center = _place(rng, slot, shape_outline(shape, extent))
    return ShapeSpec(shape=shape, colour=colour, size=size, position=position, center=center, extent=extent)


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a random scene description (nothing is rendered)."""
    background = _pick(rng, tuple(BACKGROUNDS))
    colours = [c for c in COLOURS if COLOURS[c] != BACKGROUNDS[background]]
    if rng.integers(2) == 0:
        positions, slots = (_pick(rng, SINGLE_POSITIONS),), SINGLE_SLOTS
    else:
        positions, slots = _pick(rng, ARRANGEMENTS), PAIR_SLOTS
    chosen = [colours[i] for i in rng.choice(len(colours), size=len(positions), replace=False)]
    shapes = tuple(_sample_shape(rng, c, p, slots[p]) for c, p in zip(chosen, positions))
    return Scene(background=background, shapes=shapes)


def draw_scene(scene: Scene) -> Image.Image:
    """Render a scene with flat colours (no antialiasing), so each shape's pixels are exactly its colour."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for s in scene.shapes:
        fill = COLOURS[s.colour]
        cx, cy = s.center
        if s.shape == "circle":
            draw.ellipse((cx - s.extent, cy - s.extent, cx + s.extent, cy + s.extent), fill=fill)
        else:
            draw.polygon([(cx + x, cy + y) for x, y in shape_outline(s.shape, s.extent)], fill=fill)
    return image


# ---------------------------------------------------------------- captions


def _noun_phrase(rng: np.random.Generator, s: ShapeSpec, with_size: bool) -> str:
    words = ([_pick(rng, SIZE_WORDS[s.size])] if with_size else []) + [s.colour, s.shape]
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words])


def _fields(rng: np.random.Generator, scene: Scene) -> dict[str, str]:
    """Values for every template placeholder, with synonyms drawn afresh for each caption."""
    fields = {"bg": scene.background}
    for name, s in zip(("first", "second"), scene.shapes):
        fields[name] = _noun_phrase(rng, s, with_size=True)
        fields[f"{name}_bare"] = _noun_phrase(rng, s, with_size=False)
        fields[f"pos_{name}"] = _pick(rng, POSITION_PHRASES[s.position])
    if len(scene.shapes) == 2:
        arrangement = (scene.shapes[0].position, scene.shapes[1].position)
        fields.update({k: _pick(rng, v) for k, v in RELATIONS[arrangement].items()})
    return fields


def caption_scene(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Five distinct captions from five different templates, at least one naming the background."""
    templates = SINGLE_TEMPLATES if len(scene.shapes) == 1 else PAIR_TEMPLATES
    with_bg = [t for t in templates if "{bg}" in t]
    first = _pick(rng, with_bg)
    rest = [templates[i] for i in rng.permutation(len(templates)) if templates[i] != first]
    chosen = [first, *rest[: CAPTIONS_PER_IMAGE - 1]]
    captions = [chosen[i].format(**_fields(rng, scene)) for i in rng.permutation(len(chosen))]
    if len(set(captions)) != len(captions) or any(len(c.split()) > MAX_CAPTION_WORDS for c in captions):
        raise RuntimeError(f"caption templates broke their contract: {captions}")
    return captions


def _scene_rngs(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Separate streams for drawing and captioning, both fixed by (seed, index) alone."""
    return np.random.default_rng([seed, index, 0]), np.random.default_rng([seed, index, 1])


def make_example(seed: int, index: int) -> tuple[Scene, list[str], Image.Image]:
    """Image `index` of the set generated with `seed`: its scene, captions and picture."""
    scene_rng, caption_rng = _scene_rngs(seed, index)
    scene = sample_scene(scene_rng)
    return scene, caption_scene(scene, caption_rng), draw_scene(scene)


# ---------------------------------------------------------------- files


def image_file(index: int) -> str:
    """Path of image `index` relative to the data directory, as recorded in captions.json."""
    return f"{IMAGES_SUBDIR}/scene_{index:06d}.png"


_IMAGE_NAME = re.compile(r"scene_(\d{6})\.png")


def _header(seed: int, num_images: int) -> dict:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "num_images": num_images,
        "image_size": IMAGE_SIZE,
    }


def _is_complete(out_dir: Path, seed: int, num_images: int) -> bool:
    """True when out_dir already holds exactly the set this call would generate."""
    try:
        meta = json.loads((out_dir / CAPTIONS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in _header(seed, num_images).items()):
        return False
    entries = meta.get("images")
    if not isinstance(entries, list) or len(entries) != num_images:
        return False
    return all((out_dir / image_file(i)).is_file() for i in range(num_images))


def _remove_stale_images(images_dir: Path, num_images: int) -> None:
    """Drop images left from a larger earlier set, so the directory matches captions.json."""
    for path in images_dir.glob("scene_*.png"):
        match = _IMAGE_NAME.fullmatch(path.name)
        if match and int(match.group(1)) >= num_images:
            path.unlink()


def generate(out_dir: Path, num_images: int = 3000, seed: int = 0, progress: bool = True) -> LoadedDataset:
    """Write the set for (seed, num_images) into out_dir, or reuse it if it is already there complete."""
    if num_images < 1:
        raise BadInput(f"num_images must be at least 1, got {num_images}")
    if seed < 0:
        raise BadInput(f"seed must be non-negative, got {seed}")
    out_dir = Path(out_dir)
    if _is_complete(out_dir, seed, num_images):
        return load(out_dir)
    # Invalidate first: if we are interrupted, the half-written set has no captions.json and is never reused.
    (out_dir / CAPTIONS_FILE).unlink(missing_ok=True)
    images_dir = out_dir / IMAGES_SUBDIR
    images_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for index in tqdm(range(num_images), desc="synthetic scenes", unit="img", disable=not progress):
        scene, captions, image = make_example(seed, index)
        image.save(out_dir / image_file(index), format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        entries.append({"file": image_file(index), "captions": captions, "scene": scene.to_json()})
    _remove_stale_images(images_dir, num_images)
    atomic_write_json(out_dir / CAPTIONS_FILE, {**_header(seed, num_images), "images": entries})
    return load(out_dir)


def load(data_dir: Path, images_dir: Path | None = None) -> LoadedDataset:
    """Read a generated set. image_id is the file relative to image_root (data_dir, or images_dir if given).

    No split is assigned: the prepare step splits the synthetic set like any dataset without one.
    """
    data_dir = Path(data_dir).resolve()
    path = data_dir / CAPTIONS_FILE
    if not path.is_file():
        raise MissingFile(
            f"{path} not found: no synthetic dataset has been generated in {data_dir}; "
            f"run `{PREPARE_HINT}` to create it"
        )
    meta = read_json(path, "synthetic captions file")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DamagedFile(f"{path} is not a synthetic-scenes captions file (format {FORMAT!r} expected)")
    image_root = data_dir if images_dir is None else Path(images_dir).resolve()
    issues = ParseIssues()
    rows = _caption_rows(meta.get("images"), images_dir is not None, issues)
    return LoadedDataset(
        name=NAME,
        image_root=image_root,
        images=group_captions(rows, image_root, issues),
        issues=issues,
        lines_read=len(rows),
        source_files=[str(path)],
    )


def _caption_rows(entries, flat_images: bool, issues: ParseIssues) -> list[tuple[str, str]]:
    """(image_id, caption) rows; with a separate images_dir the images are looked up by file name alone."""
    rows = []
    for number, entry in enumerate(entries if isinstance(entries, list) else []):
        file = entry.get("file") if isinstance(entry, dict) else None
        captions = entry.get("captions") if isinstance(entry, dict) else None
        if not isinstance(file, str) or not isinstance(captions, list):
            issues.add("malformed_entry", f"{CAPTIONS_FILE}: images[{number}]")
            continue
        image_id = PurePosixPath(file).name if flat_images else file
        for caption in captions:
            if isinstance(caption, str):
                rows.append((image_id, caption))
            else:
                issues.add("malformed_caption", f"{image_id}: {caption!r}")
    return rows
