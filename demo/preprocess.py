"""Image preprocessing: any image a user or a dataset hands us -> 224x224 RGB uint8.

This is the one function that training features, export parity checks and
serving all call, so a caption model never sees pixels prepared differently
from those it was trained on. The VGG16 "caffe" normalisation (RGB->BGR, mean
subtraction) is *not* done here: it lives inside the encoder graph.

Choices, fixed by `PREPROCESS_VERSION` (a feature cache built with another
version is refused):
- EXIF orientation is applied, so a phone photo is seen upright;
- transparency is composited onto white, 16-bit and float images are scaled
  to 8 bits by their full range, CMYK/palette/greyscale become RGB;
- the whole image is squashed to 224x224 (no crop: captions describe the
  whole picture) with Pillow's antialiased bilinear filter. Large JPEGs are
  first decoded at a reduced DCT scale that stays at least 2x the target,
  which is several times faster and indistinguishable after the resize.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from demo.errors import CaptionerError

IMAGE_SIZE = 224
PREPROCESS_VERSION = "rgb224-exif-white-alpha-squash-bilinear-v1"
MAX_IMAGE_PIXELS = 64_000_000  # ~8000x8000; larger headers are refused as decompression bombs
RESAMPLE = Image.Resampling.BILINEAR

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]


class ImageError(CaptionerError, ValueError):
    """An input that cannot be turned into pixels; the message says which and why."""


def load_image(source: ImageSource, size: int = IMAGE_SIZE, name: str | None = None) -> np.ndarray:
    """Decode `source` (path, bytes, PIL image or HxWxC array) into a (size, size, 3) uint8 RGB array.

    `name` is what error messages call the image (default: the path): a server names the user's file,
    not its own upload folder.
    """
    name = name or _describe(source)
    rgb = upright_rgb(source, size, name)
    try:
        return np.asarray(rgb.resize((size, size), RESAMPLE), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: cannot decode image ({exc})") from exc


def upright_rgb(source: ImageSource, size: int = IMAGE_SIZE, name: str | None = None) -> Image.Image:
    """The image before the squash: EXIF orientation applied, RGB as `to_rgb` makes it, a large JPEG decoded at
    the reduced scale that still gives at least 2 x `size`. What the model's input is made from, and what a map
    of it is drawn over."""
    name = name or _describe(source)
    image = _open(source, name, size)
    try:
        return to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: cannot decode image ({exc})") from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB without losing the picture's meaning."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    elif image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit and 32-bit greyscale by the type's range (Pillow's convert would clip at 255)."""
    pixels = np.asarray(image)
    if image.mode == "F":
        lo, hi = float(np.nanmin(pixels)), float(np.nanmax(pixels))
        scaled = (np.nan_to_num(pixels, nan=lo) - lo) / max(hi - lo, 1e-12) * 255.0
    elif image.mode == "I":
        hi = 65535.0 if pixels.max(initial=0) > 255 else 255.0
        scaled = np.clip(pixels, 0, hi) / hi * 255.0
    else:
        scaled = pixels.astype(np.float64) / 65535.0 * 255.0
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB")


def _open(source: ImageSource, name: str, size: int) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{name}: no such file")
        data = path.read_bytes()
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ImageError(
                f"{name}: image is {image.width}x{image.height} pixels, over the "
                f"{MAX_IMAGE_PIXELS:,}-pixel limit; resize it first"
            )
        if image.format == "JPEG":
            image.draft("RGB", (2 * size, 2 * size))
        image.load()
    except ImageError:
        raise  # already says what is wrong (it is a ValueError: keep it out of the clause below)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image is too large to decode safely ({exc}); resize it first") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not an image file Pillow can read (use JPEG, PNG, WebP, GIF, BMP or TIFF)") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{name}: cannot decode image ({exc}); the file is damaged or incomplete") from exc
    if image.width < 1 or image.height < 1:
        raise ImageError(f"{name}: image has no pixels")
    return image


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise ImageError(f"{name}: expected an HxW, HxWx3 or HxWx4 array, got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0:
            array = array * 255.0
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return Image.fromarray(array, mode="RGBA" if array.shape[-1] == 4 else "RGB")


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    return "<image>"
