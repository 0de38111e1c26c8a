"""Why the model said each word: occlusion maps, with the exported encoder and decoder step only.

A merge model has no attention to show, but occlusion needs none and no gradients either: hide one region of the
image, encode it again, and see how much each word's log-probability falls when the decoder reads the same
caption (teacher forcing) from the hidden version. A word's map is that fall per region.

The grid: 56-pixel patches every 28 pixels of the 224 x 224 input, a 7 x 7 grid of 49 regions, each overlapping
its neighbours by half. A patch is a quarter of the image's side: large enough to hide a shape of the synthetic
scenes or an object of a photo whole (a patch smaller than the thing hidden barely moves its word), small enough
that a map says left from right and top from bottom; the overlap keeps a thing on a border visible in some map
cell. The cost is 50 encoder passes (49 hidden versions and the image itself), in batches; the decoder then runs
one step per word for all 50 at once. A patch is filled with VGG16's mean pixel, which the encoder subtracts, so
the network sees zeros there: "nothing", not black.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from demo.errors import BadInput
from demo.generation import GenerationConfig
from demo.preprocess import IMAGE_SIZE, ImageSource, load_image
from demo.vocab import END

MEAN_PIXEL_RGB = (124, 117, 104)  # VGG16's channel means (caffe: R 123.68, G 116.78, B 103.94), rounded
ENCODER_BATCH = 8  # images per encoder pass: the server's batch; larger passes are no faster per image on a CPU


@dataclass(frozen=True)
class OcclusionGrid:
    """Square patches of `patch` pixels every `stride` pixels over the model's input."""

    patch: int = 56
    stride: int = 28

    @property
    def cells(self) -> int:
        """Regions per side."""
        return (IMAGE_SIZE - self.patch) // self.stride + 1

    def corners(self) -> list[tuple[int, int]]:
        """(top, left) of each region, row by row."""
        return [(row * self.stride, col * self.stride) for row in range(self.cells) for col in range(self.cells)]

    def occluded(self, pixels: np.ndarray) -> np.ndarray:
        """The image itself, then one copy per region with that region filled with the mean pixel:
        (1 + cells**2, 224, 224, 3) uint8."""
        versions = np.repeat(pixels[None], 1 + self.cells ** 2, axis=0)
        for index, (top, left) in enumerate(self.corners(), start=1):
            versions[index, top:top + self.patch, left:left + self.patch] = MEAN_PIXEL_RGB
        return versions

    def to_dict(self) -> dict:
        return {"image_size": IMAGE_SIZE, "patch": self.patch, "stride": self.stride, "cells": self.cells,
                "fill_rgb": list(MEAN_PIXEL_RGB)}


GRID = OcclusionGrid()


@dataclass
class WordMap:
    """One word: its log-probability on the whole image, and how much hiding each region lowers it."""

    word: str
    log_prob: float
    drops: np.ndarray  # (cells, cells): log_prob minus the log-prob with that region hidden; > 0: it mattered

    def to_dict(self) -> dict:
        return {"word": self.word, "log_prob": self.log_prob, "drops": np.round(self.drops, 5).tolist()}


@dataclass
class Explanation:
    """The maps of one caption's words (and of its end), on one grid."""

    caption: str
    words: list[WordMap]
    end: WordMap  # the caption's `<end>`: what made it stop there
    grid: OcclusionGrid = GRID
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"caption": self.caption, "grid": self.grid.to_dict(), "words": [w.to_dict() for w in self.words],
                "end": self.end.to_dict(), "timings_ms": self.timings_ms}


@dataclass
class HiddenVersions:
    """The encoder's features of the image (row 0) and of each hidden version: all any caption of this image
    needs to be explained; `encoder_ms`, what computing them took."""

    features: np.ndarray  # (1 + cells**2, F)
    encoder_ms: float


def occluded_features(captioner, pixels: np.ndarray, grid: OcclusionGrid = GRID, batch_size: int = ENCODER_BATCH,
                      progress: Callable[[int, int], None] | None = None) -> HiddenVersions:
    """The image and each hidden version through the encoder, in batches; `progress(done, total)` after each."""
    started = time.perf_counter()
    versions = grid.occluded(pixels)
    passes = []
    for start in range(0, len(versions), batch_size):
        passes.append(captioner.encode(versions[start:start + batch_size])[0])
        if progress:
            progress(min(start + batch_size, len(versions)), len(versions))
    return HiddenVersions(np.concatenate(passes), (time.perf_counter() - started) * 1000)


def explain_caption(captioner, hidden: HiddenVersions, words: list[str], grid: OcclusionGrid = GRID) -> Explanation:
    """The occlusion maps of `words` (a caption of this image, from any search), from `occluded_features`."""
    started = time.perf_counter()
    vocab = captioner.vocab
    unknown = [word for word in words if word not in vocab]
    if unknown:
        raise BadInput(f"the caption has words this model's vocabulary lacks ({', '.join(unknown)}): explain a "
                       "caption the model wrote")
    targets = [*map(vocab.id_of, words), vocab.end_id]
    log_probs = captioner.decoder.word_log_probs(hidden.features, vocab.start_id, targets)
    drops = (log_probs[0] - log_probs[1:]).T.reshape(len(targets), grid.cells, grid.cells)
    maps = [WordMap(word, float(log_probs[0, t]), drops[t]) for t, word in enumerate([*words, END])]
    timings = {"decoder_ms": (time.perf_counter() - started) * 1000, "encoder_ms": hidden.encoder_ms,
               "images_encoded": len(hidden.features)}
    return Explanation(" ".join(words), maps[:-1], maps[-1], grid, timings)


def explain_image(captioner, image: ImageSource, config: GenerationConfig, candidate: int = 0,
                  name: str | None = None, grid: OcclusionGrid = GRID) -> Explanation:
    """Caption one image with `config` and explain its `candidate`-th caption (0: the best; beam search lists
    `num_return_sequences`)."""
    pixels = load_image(image, name=name)
    result = captioner.caption_pixels(pixels[None], captioner.options(config))[0]
    if not 0 <= candidate < len(result.candidates):
        raise BadInput(f"candidate {candidate} does not exist: the search listed {len(result.candidates)} "
                       "(ask for more with num_return_sequences)")
    return explain_caption(captioner, occluded_features(captioner, pixels, grid), result.candidates[candidate].tokens,
                           grid)
