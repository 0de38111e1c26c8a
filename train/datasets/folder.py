"""Your own pictures: a folder of images and one captions file beside them.

`captions.csv` has the columns `image,caption` (Kaggle's Flickr8k `captions.txt` layout), several rows per
image, and optionally `split` (train, val or test); `captions.jsonl` has one object per line,
`{"image": ..., "caption": ...}` or `{"image": ..., "captions": [...]}`, optionally with `"split"`. Image
names are paths relative to the folder (or to `--images-dir`). Where no split is given, `prepare` draws one.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from demo.errors import MissingFile
from train.datasets.records import SPLITS, CaptionedImage, LoadedDataset, ParseIssues, group_captions, read_text_lines

NAME = "folder"
CSV_FILE, JSONL_FILE = "captions.csv", "captions.jsonl"
Row = tuple[str, str, str | None]  # image, caption, split


def load(data_dir: Path, images_dir: Path | None = None) -> LoadedDataset:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingFile(f"image folder not found: {data_dir} (expected the images and {CSV_FILE} or "
                          f"{JSONL_FILE} in it)")
    issues = ParseIssues()
    if (data_dir / CSV_FILE).is_file():
        source, rows = CSV_FILE, _csv_rows(data_dir / CSV_FILE, issues)
    elif (data_dir / JSONL_FILE).is_file():
        source, rows = JSONL_FILE, _jsonl_rows(data_dir / JSONL_FILE, issues)
    else:
        raise MissingFile(f"no captions file in {data_dir}: write {CSV_FILE} (columns image,caption[,split]) or "
                          f"{JSONL_FILE} ({{\"image\": ..., \"caption\": ...}} per line)")
    image_root = Path(images_dir) if images_dir is not None else data_dir
    images = group_captions([(image, caption) for image, caption, _ in rows], image_root, issues)
    _apply_splits(images, rows, issues)
    return LoadedDataset(name=NAME, image_root=image_root, images=images, issues=issues, lines_read=len(rows),
                         source_files=[source])


def _csv_rows(path: Path, issues: ParseIssues) -> list[Row]:
    records = [(n, r) for n, r in enumerate(csv.reader(read_text_lines(path, issues)), 1) if any(f.strip() for f in r)]
    if not records:
        return []
    header = [field.strip().lower() for field in records[0][1]]
    if "image" not in header or "caption" not in header:
        raise MissingFile(f"{path}: the first row must name the columns, image,caption (and optionally split); "
                          f"it is {','.join(records[0][1])!r}")
    image, caption, split = header.index("image"), header.index("caption"), _index(header, "split")
    rows = []
    for number, record in records[1:]:
        if len(record) != len(header) or not record[image].strip():
            issues.add("malformed_row", f"{path.name}:{number}: {','.join(record)}")
            continue
        rows.append((record[image].strip(), record[caption], record[split].strip() if split is not None else None))
    return rows


def _index(header: list[str], name: str) -> int | None:
    return header.index(name) if name in header else None


def _jsonl_rows(path: Path, issues: ParseIssues) -> list[Row]:
    rows = []
    for number, line in enumerate(read_text_lines(path, issues), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        captions = _captions_of(record)
        if captions is None:
            issues.add("malformed_row", f"{path.name}:{number}: {line.strip()[:200]}")
            continue
        split = record.get("split")
        rows.extend((record["image"].strip(), caption, split if isinstance(split, str) else None)
                    for caption in captions)
    return rows


def _captions_of(record) -> list[str] | None:
    """The record's captions, or None when it is not an object with an image name and string caption(s)."""
    if not isinstance(record, dict) or not isinstance(record.get("image"), str) or not record["image"].strip():
        return None
    captions = record.get("captions", [record["caption"]] if "caption" in record else None)
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        return None
    return captions


def _apply_splits(images: list[CaptionedImage], rows: list[Row], issues: ParseIssues) -> None:
    """An image's split is what its rows say; an unknown name or rows that disagree leave it to `prepare`."""
    said: dict[str, set[str]] = {}
    for image, _, split in rows:
        if split is None or not split.strip():
            continue
        if split not in SPLITS:
            issues.add("unknown_split", f"{image}: {split!r} (known: {', '.join(SPLITS)})")
            continue
        said.setdefault(image, set()).add(split)
    for image in images:
        splits = said.get(image.image_id, set())
        if len(splits) > 1:
            issues.add("conflicting_split", f"{image.image_id}: {', '.join(sorted(splits))}")
        elif splits:
            image.split = splits.pop()
