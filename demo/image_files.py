"""Which files `python -m demo caption` captions, and their pixels a batch at a time.

Folders are walked here, once, so every caller agrees on what counts as an image: the suffixes below,
case-insensitive, hidden files and folders left out, sorted so that two runs over the same folder list the
same paths in the same order (what a resumed `--out` file is matched against). Files named explicitly are
taken whatever their suffix: `load_image` decides whether they are images.

Pixels are loaded batch by batch, never all at once, so a folder of 100,000 photos needs the memory of two
batches; the next batch is decoded on a small thread pool while the caller runs the model on this one.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from demo.errors import MissingFile
from demo.preprocess import ImageError, load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
# Threads decoding JPEGs (Pillow releases the GIL while it decodes and resizes).
LOAD_WORKERS = 2

log = logging.getLogger(__name__)


def find_images(paths: Sequence[Path], recursive: bool = False) -> list[Path]:
    """Files named in `paths`, plus the image files of the folders among them (sorted; `recursive`: below too).

    A path that does not exist stops everything before any model is loaded (`MissingFile`); a folder without
    images is only warned about. Each file is listed once, at its first mention.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            images = _folder_images(path, recursive)
            if not images:
                below = not recursive and any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())
                log.warning(f"warning: {path} has no image files ({' '.join(IMAGE_SUFFIXES)})"
                            + ("; --recursive also looks in its subfolders" if below else ""))
            found += images
        elif path.exists():
            found.append(path)
        else:
            raise MissingFile(f"{path} does not exist: name image files or folders of images")
    return _first_mentions(found)


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    """Image files of `folder` (and, `recursive`, of its non-hidden subfolders), sorted by path."""
    images = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        images += [Path(root) / name for name in files if _is_image_name(name)]
    return sorted(images, key=lambda p: p.relative_to(folder).parts)


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _first_mentions(paths: Iterable[Path]) -> list[Path]:
    """`paths` without repeats (a file named and also inside a named folder is captioned once)."""
    seen: set[str] = set()
    unique = []
    for path in paths:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


@dataclass
class Batch:
    """One batch: its paths as listed; those that decoded, with their pixels (N, 224, 224, 3); those refused,
    with why."""

    listed: list[Path] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    pixels: np.ndarray | None = None
    refused: list[tuple[Path, str]] = field(default_factory=list)


def load_batches(paths: Sequence[Path], batch_size: int, workers: int = LOAD_WORKERS) -> Iterator[Batch]:
    """Batches of `paths` in order; while the caller works on one, the next is being decoded.

    A file that cannot be read or decoded (`ImageError`, `OSError`) is refused alone: it goes into its
    batch's `refused`.
    At most two batches are held, the one yielded and the one being decoded.
    """
    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="load-image") as pool:
        pending = _submit(pool, paths[:batch_size])
        for start in starts:
            current = pending
            following = paths[start + batch_size:start + 2 * batch_size]
            pending = _submit(pool, following) if following else []
            yield _collect(current)


def _submit(pool: ThreadPoolExecutor, paths: Sequence[Path]) -> list[tuple[Path, Future]]:
    return [(path, pool.submit(load_image, path)) for path in paths]


def _collect(pending: list[tuple[Path, Future]]) -> Batch:
    batch, pixels = Batch(listed=[path for path, _ in pending]), []
    for path, future in pending:
        try:
            pixels.append(future.result())
            batch.paths.append(path)
        except ImageError as exc:
            batch.refused.append((path, str(exc)))
        except OSError as exc:  # unreadable (permissions, a vanished file): refused like a damaged image
            batch.refused.append((path, f"{path}: cannot read the file ({exc.strerror or exc})"))
    batch.pixels = np.stack(pixels) if pixels else None
    return batch
