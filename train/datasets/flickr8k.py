"""Flickr8k in either of its two real layouts.

Original release: `Flickr8k.token.txt` (`NAME.jpg#N<TAB>caption`), images in
`Flicker8k_Dataset/` (sic) and the official split lists. Real copies have a few
lines with a space where the tab belongs; a space is accepted as the separator
because the `#N` before it already marks where the name ends.

Kaggle copy: `captions.txt` (`image,caption` CSV with quoted commas) and
`Images/`, without split lists. The original layout wins when both are present
because only it carries the official split.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from demo.errors import MissingFile
from train.datasets.records import (
    CaptionedImage,
    LoadedDataset,
    ParseIssues,
    group_captions,
    read_text_lines,
)

NAME = "flickr8k"
TOKEN_FILE = "Flickr8k.token.txt"
KAGGLE_FILE = "captions.txt"
IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images")
KAGGLE_IMAGE_DIR = "Images"
SPLIT_FILES = (
    ("Flickr_8k.trainImages.txt", "train"),
    ("Flickr_8k.devImages.txt", "val"),
    ("Flickr_8k.testImages.txt", "test"),
)

_TOKEN_LINE = re.compile(r"^(?P<name>[^#\t]+?)#(?P<number>\d+)[\t ](?P<caption>.*)$")


def load(data_dir: Path, images_dir: Path | None = None) -> LoadedDataset:
    """Read whichever Flickr8k layout is in `data_dir`, preferring the original one for its official split."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingFile(
            f"Flickr8k data directory not found: {data_dir} (expected {TOKEN_FILE} or {KAGGLE_FILE} in it)"
        )
    if (data_dir / TOKEN_FILE).is_file():
        return _load_original(data_dir, images_dir)
    if (data_dir / KAGGLE_FILE).is_file():
        return _load_kaggle(data_dir, images_dir)
    raise MissingFile(
        f"No Flickr8k captions file in {data_dir}: looked for {TOKEN_FILE} (original release) "
        f"and {KAGGLE_FILE} (Kaggle copy)"
    )


def _load_original(data_dir: Path, images_dir: Path | None) -> LoadedDataset:
    image_root = Path(images_dir) if images_dir is not None else _first_existing(data_dir, IMAGE_DIRS)
    dataset = load_token_file(data_dir / TOKEN_FILE, image_root)
    dataset.source_files += _apply_splits(dataset.images, data_dir, dataset.issues)
    return dataset


def load_token_file(path: Path, image_root: Path) -> LoadedDataset:
    """Parse one `NAME.jpg#N<TAB>caption` file, whatever it is called, without split lists.

    Public for callers that have the captions but not the dataset folder (the Flickr-scale benchmark model).
    """
    issues = ParseIssues()
    lines = [(n, line) for n, line in enumerate(read_text_lines(path, issues), 1) if line.strip()]
    rows = _parse_token_lines(lines, issues, path.name)
    return LoadedDataset(
        name=NAME,
        image_root=image_root,
        images=group_captions(rows, image_root, issues),
        issues=issues,
        lines_read=len(lines),
        source_files=[path.name],
    )


def _load_kaggle(data_dir: Path, images_dir: Path | None) -> LoadedDataset:
    image_root = Path(images_dir) if images_dir is not None else data_dir / KAGGLE_IMAGE_DIR
    issues = ParseIssues()
    records = list(csv.reader(read_text_lines(data_dir / KAGGLE_FILE, issues)))
    numbered = [(n, record) for n, record in enumerate(records, 1) if any(field.strip() for field in record)]
    if numbered and [field.strip().lower() for field in numbered[0][1]] == ["image", "caption"]:
        numbered = numbered[1:]
    rows = _parse_csv_records(numbered, issues)
    return LoadedDataset(
        name=NAME,
        image_root=image_root,
        images=group_captions(rows, image_root, issues),
        issues=issues,
        lines_read=len(numbered),
        source_files=[KAGGLE_FILE],
    )


def _first_existing(data_dir: Path, names: tuple[str, ...]) -> Path:
    """Copies name the image folder differently; fall back to the original name so the report shows where we looked."""
    for name in names:
        if (data_dir / name).is_dir():
            return data_dir / name
    return data_dir / names[0]


def _parse_token_lines(lines: list[tuple[int, str]], issues: ParseIssues,
                      file_name: str = TOKEN_FILE) -> list[tuple[str, str]]:
    rows = []
    for number, line in lines:
        match = _TOKEN_LINE.match(line)
        if match is None or not match["name"].strip():
            issues.add("malformed_row", f"{file_name}:{number}: {line.strip()}")
            continue
        rows.append((match["name"].strip(), match["caption"]))
    return rows


def _parse_csv_records(records: list[tuple[int, list[str]]], issues: ParseIssues) -> list[tuple[str, str]]:
    """Unquoted commas split a caption into extra fields; rejoin them since the image name never has a comma."""
    rows = []
    for number, record in records:
        if len(record) < 2 or not record[0].strip():
            issues.add("malformed_row", f"{KAGGLE_FILE}:{number}: {','.join(record)}")
            continue
        rows.append((record[0].strip(), ",".join(record[1:])))
    return rows


def _apply_splits(images: list[CaptionedImage], data_dir: Path, issues: ParseIssues) -> list[str]:
    """Set each image's split from the official lists present; returns the list files read."""
    split_of: dict[str, str] = {}
    read = []
    for file_name, split in SPLIT_FILES:
        path = data_dir / file_name
        if not path.is_file():
            continue
        read.append(file_name)
        for name in (line.strip() for line in read_text_lines(path, issues)):
            if not name:
                continue
            if name in split_of and split_of[name] != split:
                issues.add("split_conflict", f"{file_name}: {name} already in {split_of[name]}")
                continue
            split_of[name] = split
    for image in images:
        image.split = split_of.get(image.image_id)
    return read
