"""Benchmark inputs that cost what real photos cost: Flickr-sized JPEGs with fine texture."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo_like_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Write `count` 500x375 JPEGs (quality 90) and return their paths.

    Smooth colour fields plus noise, so the JPEG decoder does the work a
    Flickr photo gives it; flat synthetic scenes would decode several times faster.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        base = rng.integers(0, 255, (375 // 5 + 1, 500 // 5 + 1, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(base).resize((500, 375), Image.Resampling.BICUBIC))
        noise = rng.integers(-20, 20, smooth.shape)
        path = folder / f"{i}.jpg"
        Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def png_header_claiming(width: int, height: int) -> bytes:
    """A small PNG whose IHDR claims `width` x `height`: a decompression bomb without the pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) \
        + chunk(b"IEND", b"")
