"""Karpathy's split files (`dataset_flickr8k.json`, `dataset_flickr30k.json`, `dataset_coco.json`).

These carry the train/val/test split that published results use, so they are
preferred over a dataset's own lists when given. "restval" (COCO images that
are neither val nor test) is training data, as in the papers that use it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from demo.errors import BadInput, DamagedFile, MissingFile
from train.datasets.records import LoadedDataset, ParseIssues, group_captions, read_text_lines

JSON_FILES = ("dataset_flickr8k.json", "dataset_flickr30k.json", "dataset_coco.json")
IMAGE_DIRS = ("images", "Images", "flickr30k_images", "Flicker8k_Dataset", "Flickr8k_Dataset", ".")
SPLIT_NAMES = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def load(data_dir: Path, images_dir: Path | None = None) -> LoadedDataset:
    """Read one Karpathy split file; `data_dir` is the JSON file itself or a folder holding exactly one."""
    json_path = find_json(Path(data_dir))
    issues = ParseIssues()
    data = _read_json(json_path, issues)
    dataset = str(data.get("dataset") or _dataset_from_file_name(json_path))
    image_root = Path(images_dir) if images_dir is not None else _image_root(json_path.parent, dataset)
    entries, sentences_read = _parse_entries(data["images"], json_path.name, issues)
    rows = [(image_id, caption) for image_id, _, captions in entries for caption in captions]
    images = group_captions(rows, image_root, issues)
    split_of = _split_by_image(entries, json_path.name, issues)
    for image in images:
        image.split = split_of.get(image.image_id)
    return LoadedDataset(
        name=f"karpathy-{dataset}",
        image_root=image_root,
        images=images,
        issues=issues,
        lines_read=sentences_read,
        source_files=[json_path.name],
    )


def find_json(data_dir: Path) -> Path:
    """The split file to read; refuses to guess when a folder holds several."""
    if data_dir.is_file():
        return data_dir
    if not data_dir.is_dir():
        raise MissingFile(
            f"Karpathy split file or folder not found: {data_dir} (expected one of {', '.join(JSON_FILES)})"
        )
    found = [data_dir / name for name in JSON_FILES if (data_dir / name).is_file()]
    if not found:
        raise MissingFile(f"No Karpathy split file in {data_dir}: looked for {', '.join(JSON_FILES)}")
    if len(found) > 1:
        raise BadInput(
            f"Several Karpathy split files in {data_dir} ({', '.join(p.name for p in found)}); "
            "pass the path of the one to use"
        )
    return found[0]


def _dataset_from_file_name(path: Path) -> str:
    return path.stem.removeprefix("dataset_")


def _image_root(data_dir: Path, dataset: str) -> Path:
    """COCO ids already start with their folder (`val2014/...`), so its root is the data folder itself."""
    if dataset == "coco":
        return data_dir
    for name in IMAGE_DIRS:
        if (data_dir / name).is_dir():
            return (data_dir / name) if name != "." else data_dir
    return data_dir


def _read_json(path: Path, issues: ParseIssues) -> dict[str, Any]:
    try:
        data = json.loads("\n".join(read_text_lines(path, issues)))
    except json.JSONDecodeError as error:
        raise DamagedFile(f"{path} is not valid JSON ({error}); expected a Karpathy split file") from error
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DamagedFile(
            f"{path} is not a Karpathy split file: expected an object with an 'images' list "
            "of {filename, split, sentences}"
        )
    return data


def _parse_entries(
    raw_images: list[Any], file_name: str, issues: ParseIssues
) -> tuple[list[tuple[str, str | None, list[str]]], int]:
    """(image_id, split, captions) of each well-formed entry, and how many sentences were read."""
    entries = []
    sentences_read = 0
    for index, entry in enumerate(raw_images):
        problem = _entry_problem(entry)
        if problem:
            issues.add("malformed_entry", f"{file_name}: images[{index}]: {problem}")
            continue
        filepath = entry.get("filepath") or ""
        image_id = f"{filepath}/{entry['filename']}" if filepath else entry["filename"]
        captions = []
        for number, sentence in enumerate(entry["sentences"]):
            sentences_read += 1
            caption = _sentence_text(sentence)
            if caption is None:
                issues.add("malformed_entry", f"{file_name}: images[{index}].sentences[{number}]: {sentence!r:.80}")
                continue
            captions.append(caption)
        entries.append((image_id, SPLIT_NAMES.get(entry.get("split")), captions))
    return entries, sentences_read


def _entry_problem(entry: Any) -> str | None:
    """Why an image entry cannot be used, or None when it can."""
    if not isinstance(entry, dict):
        return f"not an object: {entry!r:.80}"
    if not isinstance(entry.get("filename"), str) or not entry["filename"].strip():
        return "missing 'filename'"
    if entry.get("filepath") is not None and not isinstance(entry["filepath"], str):
        return f"'filepath' is not a string: {entry['filepath']!r:.80}"
    if not isinstance(entry.get("sentences"), list):
        return f"{entry['filename']}: missing 'sentences' list"
    if "split" in entry and entry["split"] not in SPLIT_NAMES:
        return f"{entry['filename']}: unknown split {entry['split']!r:.40}"
    return None


def _sentence_text(sentence: Any) -> str | None:
    """`raw` when present and not blank; some files only have `tokens`."""
    if not isinstance(sentence, dict):
        return None
    raw = sentence.get("raw")
    if isinstance(raw, str) and raw.strip():
        return raw
    tokens = sentence.get("tokens")
    if isinstance(tokens, list) and all(isinstance(token, str) for token in tokens):
        return " ".join(tokens)
    return raw if isinstance(raw, str) else None


def _split_by_image(
    entries: list[tuple[str, str | None, list[str]]], file_name: str, issues: ParseIssues
) -> dict[str, str | None]:
    """First entry wins when an image is listed twice with different splits; the clash is counted."""
    split_of: dict[str, str | None] = {}
    for image_id, split, _ in entries:
        if image_id in split_of and split_of[image_id] != split:
            issues.add("split_conflict", f"{file_name}: {image_id} in {split_of[image_id]} and {split}")
            continue
        split_of.setdefault(image_id, split)
    return split_of
