"""Flickr30k as distributed on Kaggle: `results.csv` plus `flickr30k_images/`.

`results.csv` is "pipe plus space" separated (`image_name| comment_number| comment`)
and real copies carry rows whose second pipe is missing
(`2199200615.jpg| 4   A dog runs across the grass .`). Such a row is recovered
only when nothing else could explain it; anything else is counted and skipped,
so the report shows how much text was lost.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from demo.errors import MissingFile
from train.datasets.records import LoadedDataset, ParseIssues, group_captions, read_text_lines

NAME = "flickr30k"
CAPTIONS_FILE = "results.csv"
IMAGES_DIR = "flickr30k_images"
HEADER_FIRST_FIELD = "image_name"

# `NAME.jpg| N caption`: one pipe, an image file name, a comment number, then text.
_MISSING_PIPE = re.compile(
    r"^\s*(?P<name>[^|\s]+\.(?:jpe?g|png))\s*\|\s*(?P<number>\d+)\s+(?P<caption>\S[^|]*)$",
    re.IGNORECASE,
)


@dataclass
class _Row:
    line: int
    text: str
    image_id: str
    number: int
    caption: str
    recovered: bool = False


def load(data_dir: Path, images_dir: Path | None = None) -> LoadedDataset:
    """Read the Kaggle Flickr30k layout. Flickr30k defines no split, so every image gets split=None."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingFile(
            f"Flickr30k data directory not found: {data_dir} (expected {CAPTIONS_FILE} and {IMAGES_DIR}/ in it)"
        )
    captions_path = _find_captions(data_dir)
    image_root = Path(images_dir) if images_dir is not None else resolve_image_root(data_dir)
    return load_results_file(captions_path, image_root)


def load_results_file(path: Path, image_root: Path) -> LoadedDataset:
    """Parse one `image_name| comment_number| comment` file, whatever it is called.

    Public for callers that have the captions but not the dataset folder (the Flickr-scale benchmark model).
    """
    issues = ParseIssues()
    data_lines = _data_lines(read_text_lines(path, issues))
    rows = _parse(data_lines, path.name, issues)
    images = group_captions([(row.image_id, row.caption) for row in rows], image_root, issues)
    return LoadedDataset(
        name=NAME,
        image_root=image_root,
        images=images,
        issues=issues,
        lines_read=len(data_lines),
        source_files=[path.name],
    )


def resolve_image_root(data_dir: Path) -> Path:
    """The Kaggle zip sometimes unpacks to `flickr30k_images/flickr30k_images/`; use the inner folder then."""
    outer = data_dir / IMAGES_DIR
    inner = outer / IMAGES_DIR
    return inner if inner.is_dir() else outer


def _find_captions(data_dir: Path) -> Path:
    """`results.csv` sits next to the image folder, or inside it when the zip was nested."""
    candidates = [data_dir / CAPTIONS_FILE, data_dir / IMAGES_DIR / CAPTIONS_FILE]
    for path in candidates:
        if path.is_file():
            return path
    raise MissingFile(
        f"Flickr30k captions file not found in {data_dir}: looked for "
        + ", ".join(str(path) for path in candidates)
        + " (Kaggle layout: results.csv with header 'image_name| comment_number| comment')"
    )


def _data_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, text) of every caption row: blank lines and the header are not captions."""
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if numbered and _is_header(numbered[0][1]):
        numbered = numbered[1:]
    return numbered


def _is_header(line: str) -> bool:
    return line.split("|", 1)[0].strip().lower() == HEADER_FIRST_FIELD


def _parse(lines: list[tuple[int, str]], file_name: str, issues: ParseIssues) -> list[_Row]:
    """Rows in file order; recovered rows are kept only if their comment number is not taken by another row."""
    rows: list[_Row] = []
    for number, line in lines:
        row = _parse_row(number, line)
        if row is None:
            issues.add("malformed_row", f"{file_name}:{number}: {line.strip()}")
            continue
        rows.append(row)
    return _drop_ambiguous_recoveries(rows, file_name, issues)


def _parse_row(number: int, line: str) -> _Row | None:
    fields = line.split("|", 2)
    if len(fields) == 3:
        image_id, comment_number, caption = (field.strip() for field in fields)
        if image_id and comment_number.isdigit():
            return _Row(number, line, image_id, int(comment_number), caption)
        return None
    match = _MISSING_PIPE.match(line)
    if match is None:
        return None
    return _Row(number, line, match["name"], int(match["number"]), match["caption"].strip(), recovered=True)


def _drop_ambiguous_recoveries(rows: list[_Row], file_name: str, issues: ParseIssues) -> list[_Row]:
    """`NAME.jpg| 2 dogs play` could be comment 2 or a caption starting with "2"; keep it only if comment 2 is free."""
    taken: dict[tuple[str, int], int] = {}
    for row in rows:
        key = (row.image_id, row.number)
        taken[key] = taken.get(key, 0) + 1
    kept = []
    for row in rows:
        if row.recovered:
            if taken[(row.image_id, row.number)] > 1:
                issues.add("malformed_row", f"{file_name}:{row.line}: {row.text.strip()}")
                continue
            issues.add("recovered_row", f"{file_name}:{row.line}: {row.text.strip()}")
        kept.append(row)
    return kept
