"""What `python -m demo explain` writes for one image: OUT/NAME/ with one PNG per word, a strip, and the numbers.

    OUT/photo/explanation.json     {"image", "caption", "grid", "words": [{"word", "log_prob", "drops"}], "end", ...}
    OUT/photo/01_a.png ...         each word's map over the image, with its legend
    OUT/photo/strip.png            every word's map, small, on one scale

Each file is written atomically, so an interrupted run leaves whole files; running again rewrites them.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

from demo.artifacts import atomic_write_bytes, atomic_write_json
from demo.generation import GenerationConfig
from demo.heatmap import DISPLAY_WIDTH, overlay, strip
from demo.occlusion import Explanation, explain_image
from demo.preprocess import upright_rgb

RECORD = "explanation.json"
STRIP = "strip.png"


def write_explanation(captioner, path: Path, config: GenerationConfig, candidate: int, out: Path) -> Path:
    """Explain `path`'s caption and write its folder; returns the folder. A bad image raises `ImageError`."""
    explanation = explain_image(captioner, path, config, candidate)
    folder = out / path.stem
    folder.mkdir(parents=True, exist_ok=True)
    shown = upright_rgb(path, DISPLAY_WIDTH)
    for index, word in enumerate(explanation.words, start=1):
        atomic_write_bytes(folder / word_file(index, word.word), _png(overlay(shown, word, explanation.grid)))
    atomic_write_bytes(folder / STRIP, _png(strip(shown, explanation.words, explanation.grid)))
    atomic_write_json(folder / RECORD, record(path, explanation, captioner))
    return folder


def word_file(index: int, word: str) -> str:
    return f"{index:02d}_{re.sub(r'[^A-Za-z0-9_-]+', '-', word)}.png"


def record(path: Path, explanation: Explanation, captioner) -> dict:
    return {"image": str(path), **explanation.to_dict(), "provider": captioner.provider,
            "variant": captioner.variant, "decoder_variant": captioner.decoder_variant}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
