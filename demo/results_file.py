"""The `--out` file of `python -m demo caption`: JSON lines or CSV, appended batch by batch, resumable.

Captioning a big folder takes hours on a CPU, and a run may be killed. So every batch's rows are appended
and flushed to disk (fsync) before the next batch starts, and a second run with the same `--out` reads the
file back first and captions only the images not in it yet: nothing is captioned twice, nothing is lost.
What a kill can leave is a torn last line (no newline at its end: every row this module writes ends with
one); it is cut off, once the rest of the file has been read as results. Rows that record an error are
retried: the file is rewritten without them (atomically, `demo.artifacts`) before anything is appended, so
every image appears in it exactly once.

Formats, chosen by the suffix:
- `.jsonl`: one object per image, `{"path": ..., **CaptionResult.to_dict()}`, or `{"path": ..., "error": ...}`
  for a refused file; fields added to `to_dict` flow through as they are.
- `.csv`: a header, then one row per image: `path, caption, log_prob, error`, then `candidates` (the n-best
  list as JSON) when more than one caption per image is asked for, and `word_log_probs` (space-separated, 4
  decimals) when the results carry them. A resumed file keeps the columns it was started with. One row per
  line: error messages are written on one line.

A file that exists but is not such a file (another header, a line that is not a result) is refused, never
appended to.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from demo.artifacts import atomic_write_bytes
from demo.errors import BadInput

SUFFIXES = (".jsonl", ".csv")
CSV_COLUMNS = ("path", "caption", "log_prob", "error")
CSV_OPTIONAL = ("candidates", "word_log_probs")  # in this order, after CSV_COLUMNS, when present
JSONL_START = b'{"path": '  # how every JSON-lines row this module writes begins

log = logging.getLogger(__name__)


def check_suffix(path: Path) -> Path:
    """`path` if its suffix names a format; a `BadInput` naming both formats otherwise."""
    if path.suffix.lower() not in SUFFIXES:
        raise BadInput(f"--out {path}: the file name must end in .jsonl (JSON lines) or .csv")
    return path


def captioned_row(path: Path, result: dict) -> dict:
    """The JSON-lines row of a captioned image: `result` is `CaptionResult.to_dict()`."""
    return {"path": str(path), **result}


def refused_row(path: Path, message: str) -> dict:
    return {"path": str(path), "error": " ".join(message.split())}  # one line: one row per line, in CSV too


class ResultsFile:
    """An `--out` file opened for a run: what it already holds, and `append` for the next batch's rows.

    `candidates` and `word_log_probs` choose the optional CSV columns of a new file (JSON lines carries
    whatever the rows hold).
    """

    def __init__(self, path: Path, candidates: bool = False, word_log_probs: bool = False):
        self.path = check_suffix(path)
        self.csv = path.suffix.lower() == ".csv"
        self.retried = 0
        lines, torn = _complete_lines(path)
        kept = self._kept_lines(lines)  # refuses a file that is not ours before anything is changed
        _check_torn(path, torn, lines, self.csv)
        wanted = list(CSV_COLUMNS) + [c for c, on in zip(CSV_OPTIONAL, (candidates, word_log_probs)) if on]
        self.columns = (_csv_header(kept[0], path) if kept else wanted) if self.csv else None
        if self.csv and not kept:
            kept = [_csv_line(self.columns)]
        elif self.csv and self.columns != wanted:
            log.warning(f"warning: {path} keeps the columns it was started with ({','.join(self.columns)}); "
                        f"this run's options would write {','.join(wanted)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if kept != lines or torn:  # whole rows only, each image once, before anything is appended
            atomic_write_bytes(path, "".join(kept).encode("utf-8"))
        self._handle = open(path, "a", encoding="utf-8", newline="")

    def _kept_lines(self, lines: list[str]) -> list[str]:
        """`lines` without the rows that record an error (retried now); fills `done` with the others' paths."""
        self.done: set[str] = set()
        rows = lines[1:] if self.csv else lines
        kept = lines[:1] if self.csv else []
        columns = _csv_header(lines[0], self.path) if self.csv and lines else None
        for number, line in enumerate(rows, start=2 if self.csv else 1):
            row = self._parse(line, number, columns)
            if row.get("error"):
                self.retried += 1
                continue
            kept.append(line)
            self.done |= {row["path"], os.path.abspath(row["path"])}
        return kept

    def _parse(self, line: str, number: int, columns: list[str] | None) -> dict:
        try:
            row = _parse_csv(line, columns) if columns is not None else json.loads(line)
        except (ValueError, csv.Error) as exc:
            raise _not_ours(self.path, f"line {number} is not a result ({exc})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("path"), str) or not row["path"] \
                or not ({"caption", "error"} & set(row)):
            raise _not_ours(self.path, f"line {number} has no path and caption or error")
        return row

    def is_done(self, path: Path) -> bool:
        return str(path) in self.done or os.path.abspath(path) in self.done

    def todo(self, images: Sequence[Path]) -> list[Path]:
        """The images not in the file yet; logs how many were found, are done and are left."""
        left = [image for image in images if not self.is_done(image)]
        retried = f" ({self.retried} refused before: retried)" if self.retried else ""
        log.info(f"caption: {len(images)} found, {len(images) - len(left)} already done in {self.path}, "
                 f"{len(left)} to caption{retried}")
        return left

    def append(self, rows: Iterable[dict]) -> None:
        """Write one batch's rows and make them durable before the next batch starts."""
        text = "".join(_csv_line([_csv_value(row, c) for c in self.columns]) if self.csv
                       else json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        self._handle.write(text)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _complete_lines(path: Path) -> tuple[list[str], bytes]:
    """The file's complete lines, and what follows the last newline: a torn row, if the file is ours."""
    if not path.exists():
        return [], b""
    if not path.is_file():
        raise BadInput(f"--out {path} is not a file; name a .jsonl or .csv file")
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    try:
        text = complete.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_ours(path, f"it is not UTF-8 text ({exc})") from exc
    # rows end at "\n" only (str.splitlines would also cut at characters a path may hold, such as U+2028)
    return [line + "\n" for line in text.split("\n")[:-1]], data[len(complete):]


def _check_torn(path: Path, torn: bytes, lines: list[str], csv_file: bool) -> None:
    """Refuse a tail that cannot be a row this module began: the header is written whole, JSON rows start alike."""
    if not torn:
        return
    if csv_file and not lines:
        raise _not_ours(path, "it has no header line")
    if not csv_file and not (torn.startswith(JSONL_START) or JSONL_START.startswith(torn)):
        raise _not_ours(path, f"its last line does not start like a result ({torn[:40]!r})")
    log.warning(f"warning: {path}: cut off a torn last line ({len(torn)} bytes; a run was killed while writing "
                "it); its image is captioned again")


def _csv_header(line: str, path: Path) -> list[str]:
    columns = next(csv.reader([line]), [])
    extra = columns[len(CSV_COLUMNS):]
    if tuple(columns[:len(CSV_COLUMNS)]) != CSV_COLUMNS or extra != [c for c in CSV_OPTIONAL if c in extra]:
        raise _not_ours(path, f"its header is {','.join(columns)!r}, expected {','.join(CSV_COLUMNS)!r} "
                              f"(then optionally {','.join(CSV_OPTIONAL)})")
    return columns


def _parse_csv(line: str, columns: list[str]) -> dict:
    values = next(csv.reader([line], strict=True), [])
    if len(values) != len(columns):
        raise ValueError(f"{len(values)} fields, the header has {len(columns)}")
    return dict(zip(columns, values))


def _csv_line(values: Sequence[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _csv_value(row: dict, column: str) -> object:
    """A JSON-lines row's value for one CSV column ('' where the row has none)."""
    if column == "candidates":
        return json.dumps(row["candidates"], ensure_ascii=False) if "candidates" in row else ""
    if column == "word_log_probs":
        return " ".join(f"{value:.4f}" for value in row["word_log_probs"]) if "word_log_probs" in row else ""
    return row.get(column, "")


def _not_ours(path: Path, why: str) -> BadInput:
    return BadInput(f"--out {path} is not a results file of `python -m demo caption`: {why}; nothing was "
                    "written to it. Name a new file, or delete this one to start over")
