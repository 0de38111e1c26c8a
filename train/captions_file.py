"""`RUN/captions.json`: every usable image of a run, its split, and its raw and normalised captions.

The one reader and writer of the file. `prepare` writes it; features, fit,
evaluate, the export and the benchmarks read it through `read_captions`,
which checks the format tag and version, so a file from another tool or an
older layout is refused with the fix instead of failing on a missing key.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from demo.artifacts import atomic_write_json, read_json
from demo.errors import DamagedFile
from demo.text import tokenize

FORMAT = "vgg16-lstm-captioner/captions"
VERSION = 1


@dataclass(frozen=True)
class CaptionedEntry:
    id: str  # file name relative to the image root
    split: str
    captions: tuple[str, ...]  # as the dataset wrote them
    tokens: tuple[str, ...]  # normalised (`demo.text.tokenize`), words joined by spaces

    def references(self) -> list[list[str]]:
        """The normalised captions as word lists: what BLEU compares against."""
        return [t.split() for t in self.tokens]


@dataclass(frozen=True)
class RunCaptions:
    dataset: str
    image_root: Path
    images: tuple[CaptionedEntry, ...]

    def split(self, name: str) -> list[CaptionedEntry]:
        return [entry for entry in self.images if entry.split == name]

    def ids(self, split: str | None = None) -> list[str]:
        """Image ids in file order (which is the feature cache's row order), of one split or all."""
        return [entry.id for entry in self.images if split is None or entry.split == split]


def write_captions(path: str | os.PathLike, dataset: str, image_root: Path,
                   images: Iterable[tuple[str, str, list[str]]]) -> None:
    """Write (image id, split, raw captions) triples; the normalised form is computed here, once."""
    atomic_write_json(path, {
        "format": FORMAT,
        "version": VERSION,
        "dataset": dataset,
        "image_root": str(Path(image_root).resolve()),
        "images": [{"id": image_id, "split": split, "captions": list(captions),
                    "tokens": [" ".join(tokenize(c)) for c in captions]}
                   for image_id, split, captions in images],
    })


def read_captions(path: str | os.PathLike) -> RunCaptions:
    """Load and check captions.json; a missing or foreign file names `prepare` as the fix."""
    path = Path(path)
    doc = read_json(path, "captions file (run `python -m train prepare` first)")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        found = (doc.get("format"), doc.get("version")) if isinstance(doc, dict) else type(doc).__name__
        raise DamagedFile(f"{path} is not a {FORMAT} v{VERSION} file (found {found}); "
                          "run `python -m train prepare` again")
    try:
        images = tuple(CaptionedEntry(str(e["id"]), str(e["split"]), tuple(e["captions"]), tuple(e["tokens"]))
                       for e in doc["images"])
        return RunCaptions(str(doc["dataset"]), Path(doc["image_root"]), images)
    except (KeyError, TypeError) as exc:
        raise DamagedFile(f"{path} is damaged ({exc!r} missing or wrong); run `python -m train prepare` "
                          "again") from exc
