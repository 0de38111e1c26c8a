"""What every dataset loader returns, whatever the file layout it reads.

Loaders only parse; they never decide what is usable. `train.prepare` checks
that images exist and decode, assigns splits where the dataset has none, and
writes the report. Problems a loader meets while parsing (malformed rows,
non-UTF-8 lines, duplicate or empty captions) are counted in `ParseIssues` so
that nothing is dropped silently.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from demo.text import normalize

SPLITS = ("train", "val", "test")
MAX_EXAMPLES = 10  # examples of each problem kept for the report


@dataclass
class CaptionedImage:
    """One image and its raw captions. `split` is None when the dataset defines none for it."""

    image_id: str  # file name relative to `image_root`, e.g. "1000092795.jpg" or "val2014/x.jpg"
    path: Path  # absolute path where the image should be
    captions: list[str] = field(default_factory=list)
    split: str | None = None


@dataclass
class ParseIssues:
    """Counts of what a loader skipped, with a few examples each for the report."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        bucket = self.examples.setdefault(kind, [])
        if len(bucket) < MAX_EXAMPLES:
            bucket.append(example)

    def to_json(self) -> dict:
        return {kind: {"count": n, "examples": self.examples.get(kind, [])} for kind, n in sorted(self.counts.items())}


@dataclass
class LoadedDataset:
    name: str
    image_root: Path
    images: list[CaptionedImage]
    issues: ParseIssues = field(default_factory=ParseIssues)
    lines_read: int = 0  # caption lines/rows/sentences read from the source files
    source_files: list[str] = field(default_factory=list)


def group_captions(
    rows: list[tuple[str, str]], image_root: Path, issues: ParseIssues
) -> list[CaptionedImage]:
    """Group (image_id, caption) rows by image in first-seen order, dropping empty and duplicate captions."""

    by_id: dict[str, CaptionedImage] = {}
    seen: dict[str, set[str]] = {}
    for image_id, caption in rows:
        caption = caption.strip()
        norm = normalize(caption)
        if not norm:
            issues.add("empty_caption", f"{image_id}: {caption!r}")
            continue
        if image_id not in by_id:
            by_id[image_id] = CaptionedImage(image_id=image_id, path=image_root / image_id)
            seen[image_id] = set()
        if norm in seen[image_id]:
            issues.add("duplicate_caption", f"{image_id}: {caption!r}")
            continue
        seen[image_id].add(norm)
        by_id[image_id].captions.append(caption)
    return list(by_id.values())


def read_text_lines(path: Path, issues: ParseIssues) -> list[str]:
    """Lines of a text file; lines that are not UTF-8 are kept with replacement characters and counted."""
    lines = []
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            issues.add("non_utf8_line", f"{path.name}:{number}")
            lines.append(raw.decode("utf-8", errors="replace"))
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return lines
