"""Occlusion maps drawn over the image: one overlay per word with its legend, and a strip of all the words.

Pillow only (the deployment has no matplotlib). A pixel's value is the mean fall of the word's log-probability
over the regions that cover it (the regions overlap), so the overlay is the grid's own geometry, not a blur of
it; the model saw the image squashed to 224 x 224, so the map is stretched back to the image's own shape.
Only falls are drawn (red, the stronger the larger): a region whose hiding made the word more likely is left
clear, as nothing there supported the word.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from demo.occlusion import OcclusionGrid, WordMap
from demo.preprocess import IMAGE_SIZE

RED = (220, 38, 38)
MAX_ALPHA = 0.7  # the strongest fall still lets the image show through
DISPLAY_WIDTH = 448  # overlays are drawn at this width (the image's aspect kept)
THUMB_WIDTH = 120
LEGEND_HEIGHT = 44


def pixel_map(drops: np.ndarray, grid: OcclusionGrid) -> np.ndarray:
    """(224, 224) float: each pixel's mean fall over the regions covering it (0 where none does)."""
    total = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
    count = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
    for (top, left), value in zip(grid.corners(), drops.ravel()):
        total[top:top + grid.patch, left:left + grid.patch] += value
        count[top:top + grid.patch, left:left + grid.patch] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def overlay(image: Image.Image, word: WordMap, grid: OcclusionGrid, width: int = DISPLAY_WIDTH,
            scale: float | None = None, legend: bool = True) -> Image.Image:
    """The image with `word`'s map in red over it; `scale` is the fall drawn strongest (default: this map's
    largest), and the legend says it, with the word and its probability."""
    base = image.convert("RGB")
    base = base.resize((width, max(1, round(base.height * width / base.width))), Image.Resampling.BILINEAR)
    falls = np.clip(pixel_map(word.drops, grid), 0, None)
    scale = scale or float(falls.max()) or 1.0
    strength = Image.fromarray(np.uint8(np.clip(falls / scale, 0, 1) * 255 * MAX_ALPHA)).resize(
        base.size, Image.Resampling.BILINEAR)
    drawn = Image.composite(Image.new("RGB", base.size, RED), base, strength)
    return _with_legend(drawn, word, scale) if legend else drawn


def _with_legend(drawn: Image.Image, word: WordMap, scale: float) -> Image.Image:
    canvas = Image.new("RGB", (drawn.width, drawn.height + LEGEND_HEIGHT), "white")
    canvas.paste(drawn)
    draw, font = ImageDraw.Draw(canvas), _font(14)
    top = drawn.height + 6
    bar = (10, top, 170, top + 12)
    for x in range(bar[0], bar[2]):  # the colour at each fall, as the overlay blends it
        a = MAX_ALPHA * (x - bar[0]) / (bar[2] - bar[0])
        draw.line([(x, bar[1]), (x, bar[3])], fill=tuple(round(255 * (1 - a) + c * a) for c in RED))
    draw.text((bar[0], bar[3] + 2), "0", fill="black", font=_font(11))
    draw.text((bar[2] - 30, bar[3] + 2), f"{scale:.2f}", fill="black", font=_font(11))
    draw.text((bar[2] + 12, top - 2), f'"{word.word}"  p = {math.exp(word.log_prob):.2f}', fill="black", font=font)
    draw.text((bar[2] + 12, top + 16), "red: log-prob lost when hidden", fill=(90, 90, 90), font=_font(11))
    return canvas


def strip(image: Image.Image, words: list[WordMap], grid: OcclusionGrid, width: int = THUMB_WIDTH) -> Image.Image:
    """All the words' maps as thumbnails in a row, each word under its map, on one scale (the largest fall of
    any word), so a faint map is a word the image barely decided."""
    scale = max((float(np.clip(w.drops, 0, None).max()) for w in words), default=0.0) or 1.0
    thumbs = [overlay(image, w, grid, width, scale, legend=False) for w in words]
    height = thumbs[0].height if thumbs else width
    canvas = Image.new("RGB", (max(1, len(thumbs)) * (width + 6), height + 22), "white")
    draw, font = ImageDraw.Draw(canvas), _font(13)
    for index, (thumb, word) in enumerate(zip(thumbs, words)):
        canvas.paste(thumb, (index * (width + 6), 0))
        draw.text((index * (width + 6) + 4, height + 3), word.word, fill="black", font=font)
    return canvas


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)
