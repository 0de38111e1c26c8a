"""The loop behind `python -m demo caption`: load a batch, caption it, write its rows, then the next batch.

Streaming keeps memory flat however many images a folder holds, and lets each batch reach its output (a
resumable `--out` file, or stdout) before the next one is captioned, so a kill loses at most one batch.
The progress bar goes to stderr, and only when stderr is a terminal: stdout carries only what users parse,
and a log file or a calling script gets one summary line instead of hundreds of redrawn bars.
"""
from __future__ import annotations

import json
import logging
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tqdm import tqdm

from demo.image_files import load_batches
from demo.results_file import ResultsFile, captioned_row, refused_row
from demo.search.step import SearchOptions

if TYPE_CHECKING:  # lazy: importing the Captioner loads ONNX Runtime, which `python -m demo serve` need not
    from demo.captioner import Captioner

# On a CPU the encoder's time per image dominates and batching saves it little beyond a few images (the decoder's
# steps and, on a GPU, the encoder gain more; `python -m bench --only folder` compares batch 8 with batch 1).
# 8: a kill loses at most 8 images' work, the bar moves often, two batches stay small in memory. JPEG decoding
# is overlapped with the model (`load_batches`).
DEFAULT_BATCH_SIZE = 8
log = logging.getLogger(__name__)


class Output(Protocol):
    """Where a batch's rows go: a `ResultsFile`, or stdout (`TextOutput`, `JsonOutput`)."""

    def append(self, rows: list[dict]) -> None: ...


def caption_paths(captioner: Captioner, paths: Sequence[Path], options: SearchOptions, batch_size: int,
                  output: Output) -> int:
    """Caption `paths` batch by batch into `output`; returns how many files were refused (each named on stderr)."""
    refused, started = 0, time.perf_counter()
    with tqdm(total=len(paths), desc="caption", unit="img", file=sys.stderr, dynamic_ncols=True,
              disable=None) as bar:  # None: drawn on a terminal only
        for batch in load_batches(paths, batch_size):
            rows = [refused_row(path, message) for path, message in batch.refused]
            if batch.paths:
                results = captioner.caption_pixels(batch.pixels, options)
                rows += [captioned_row(path, result.to_dict()) for path, result in zip(batch.paths, results)]
            with tqdm.external_write_mode(file=sys.stdout):  # lines never cut through the bar
                for _, message in batch.refused:
                    print(f"error: {message}", file=sys.stderr)  # the others are still captioned
                output.append(_in_order(rows, batch.listed))
            refused += len(batch.refused)
            bar.update(len(batch.paths) + len(batch.refused))
    seconds = time.perf_counter() - started
    if isinstance(output, ResultsFile):  # stdout is free of captions: say what the run did, for logs
        log.info(f"caption: {len(paths) - refused} captioned, {refused} refused in {seconds:.1f} s "
                 f"({len(paths) / max(seconds, 1e-9):.2f} images/s) -> {output.path}")
    return refused


def _in_order(rows: list[dict], listed: Sequence[Path]) -> list[dict]:
    """A batch's rows in the order its images were listed (refused ones were set aside while loading)."""
    order = {str(path): index for index, path in enumerate(listed)}
    return sorted(rows, key=lambda row: order[row["path"]])


class TextOutput:
    """stdout without --json: `PATH<TAB>caption`, and one `alt (score)` line per further candidate."""

    def append(self, rows: list[dict]) -> None:
        for row in rows:
            if "error" in row:
                continue
            print(f"{row['path']}\t{row['caption']}")
            for candidate in row["candidates"][1:]:
                print(f"{row['path']}\t  alt ({candidate['score']:.3f}): {candidate['caption']}")
        sys.stdout.flush()


class JsonOutput:
    """stdout with --json: one document, `{provider, variant, decoder_variant, images: [...]}`, written as its
    images are captioned; byte for byte what `json.dumps(document, indent=2)` prints for the whole."""

    def __init__(self, header: dict):
        self._head = json.dumps(header | {"images": []}, indent=2)
        self._started = False

    def append(self, rows: list[dict]) -> None:
        for row in rows:
            if "error" in row:
                continue
            image = {"image": row["path"], **{k: v for k, v in row.items() if k != "path"}}
            opening = self._head.removesuffix("]\n}") + "\n" if not self._started else ",\n"
            sys.stdout.write(opening + textwrap.indent(json.dumps(image, indent=2), "    "))
            self._started = True
        sys.stdout.flush()

    def finish(self) -> None:
        print("\n  ]\n}" if self._started else self._head)
