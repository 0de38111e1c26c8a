"""`python -m train prepare`: captions, splits and vocabulary for a run.

Loaders only parse. This step decides what is usable: an image that is missing
or does not decode drops its captions, and every drop is counted in
`prepare_report.json` and on the console. Splits come from the dataset where
it defines them; the rest are assigned deterministically from the seed.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from demo.artifacts import atomic_write_json
from demo.errors import BadInput
from demo.preprocess import ImageError, load_image
from demo.text import tokenize
from demo.vocab import build_vocabulary
from train.captions_file import write_captions
from train.config import PrepareConfig, to_json
from train.dataset_registry import DatasetSource, dataset_entry
from train.datasets.records import SPLITS, CaptionedImage, LoadedDataset, ParseIssues
from train.run_files import RunFiles, update_run_config

MAX_DEFAULT_HOLDOUT = 1000
log = logging.getLogger(__name__)


def load_dataset(cfg: PrepareConfig) -> LoadedDataset:
    """The loader of `cfg.dataset` (`train.dataset_registry`) on `--data-dir`, or on its default folder where the
    dataset has one (synthetic: RUN/synthetic, generated there first if needed)."""
    entry = dataset_entry(cfg.dataset)
    data_dir = cfg.data_dir or (entry.default_data_dir(Path(cfg.run)) if entry.default_data_dir else None)
    if data_dir is None:
        raise BadInput(f"--data-dir is required for --dataset {cfg.dataset}")
    return entry.load(DatasetSource(Path(data_dir), cfg.images_dir, cfg.num_images, cfg.seed))


def check_images(
    images: list[CaptionedImage], issues: ParseIssues, workers: int = 2
) -> list[CaptionedImage]:
    """Keep the images that exist and decode with the serving preprocessing; count the rest."""

    def problem(image: CaptionedImage) -> tuple[str, str] | None:
        if not image.path.is_file():
            return "image_missing", image.image_id
        try:
            load_image(image.path)
        except ImageError as exc:
            return "image_unreadable", str(exc)
        return None

    kept = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(problem, images)
        for image, found in tqdm(zip(images, results), total=len(images), desc="checking images", unit="img"):
            if found is None:
                kept.append(image)
                continue
            kind, detail = found
            issues.add(kind, detail)
            issues.counts[f"captions_dropped_{kind}"] += len(image.captions)
    return kept


def default_holdout(num_images: int) -> int:
    """5% of the images, at most 1000 (the Karpathy split's size), at least one when possible."""
    if num_images < 3:
        return 0
    return min(MAX_DEFAULT_HOLDOUT, max(1, round(0.05 * num_images)))


def assign_splits(images: list[CaptionedImage], val_size: int | None, test_size: int | None, seed: int) -> Counter:
    """Give every image without a dataset split one, topping val and test up to their sizes.

    The order is a seeded shuffle of the sorted ids, so the same data and seed
    always give the same split.
    """
    given = Counter(image.split for image in images if image.split is not None)
    todo = sorted((image for image in images if image.split is None), key=lambda im: im.image_id)
    default = default_holdout(len(images))
    need = {
        "val": max(0, (default if val_size is None else val_size) - given["val"]),
        "test": max(0, (default if test_size is None else test_size) - given["test"]),
    }
    order = np.random.default_rng(seed).permutation(len(todo))
    assigned: Counter = Counter()
    for position in order:
        image = todo[position]
        image.split = next((s for s in ("val", "test") if assigned[s] < need[s]), "train")
        assigned[image.split] += 1
    return assigned


def run_prepare(cfg: PrepareConfig) -> dict:
    """Build captions.json, splits.json, vocab.json and prepare_report.json in `cfg.run`."""
    started = time.perf_counter()
    dataset = load_dataset(cfg)
    images = check_images(dataset.images, dataset.issues, cfg.workers)
    if not images:
        raise BadInput(
            f"no usable images: none of the {len(dataset.images)} images referenced by the captions "
            f"exist and decode under {dataset.image_root}. Check --data-dir / --images-dir."
        )
    return write_prepared(cfg, dataset, images, started)


def write_prepared(cfg: PrepareConfig, dataset: LoadedDataset, images: list[CaptionedImage],
                   started: float | None = None, vocabulary_splits: tuple[str, ...] = ("train",)) -> dict:
    """Splits, vocabulary and every prepare file for the usable `images` of `dataset`.

    Split from `run_prepare` so that a caller with captions but no images (the Flickr-scale benchmark
    model) writes exactly the files `prepare` writes. `started` is when the work began (perf_counter).
    The vocabulary counts the captions of `vocabulary_splits`: training only, so that evaluation meets
    unknown words as serving does; the benchmark model counts all, to get the dataset's full vocabulary.
    """
    started = time.perf_counter() if started is None else started
    files = RunFiles(Path(cfg.run))
    assigned = assign_splits(images, cfg.val_size, cfg.test_size, cfg.seed)
    splits = {s: [im.image_id for im in images if im.split == s] for s in SPLITS}
    min_count = cfg.min_count if cfg.min_count is not None else dataset_entry(cfg.dataset).min_count
    counted = [tokenize(c) for im in images if im.split in vocabulary_splits for c in im.captions]
    vocab, stats = build_vocabulary(counted, min_count=min_count, max_length=cfg.max_length,
                                    max_size=cfg.max_vocab)
    report = {
        "dataset": dataset.name,
        "image_root": str(dataset.image_root),
        "source_files": dataset.source_files,
        "lines_read": dataset.lines_read,
        "images_referenced": len(dataset.images),
        "images_kept": len(images),
        "captions_referenced": sum(len(im.captions) for im in dataset.images),
        "captions_kept": sum(len(im.captions) for im in images),
        "problems": dataset.issues.to_json(),
        "splits": {s: len(ids) for s, ids in splits.items()},
        "splits_assigned_here": dict(assigned),
        "vocabulary": {"size": len(vocab), "min_count": min_count, "max_length": cfg.max_length,
                       **stats.to_json()},
        "seconds": round(time.perf_counter() - started, 2),
    }
    files.root.mkdir(parents=True, exist_ok=True)
    write_captions(files.captions, dataset.name, dataset.image_root,
                   ((image.image_id, image.split, image.captions) for image in images))
    atomic_write_json(files.splits, splits)
    vocab.save(files.vocab)
    atomic_write_json(files.prepare_report, report)
    update_run_config(files, "prepare", to_json(cfg) | {"min_count": min_count})
    print_summary(report, files)
    return report


def print_summary(report: dict, files: RunFiles) -> None:
    problems, s, v = report["problems"], report["splits"], report["vocabulary"]
    log.info("prepare: %s: read %d caption lines, kept %d/%d images and %d/%d captions", report["dataset"],
             report["lines_read"], report["images_kept"], report["images_referenced"], report["captions_kept"],
             report["captions_referenced"])
    for kind, entry in problems.items():
        example = f" (e.g. {entry['examples'][0]})" if entry.get("examples") else ""
        log.info("  dropped or skipped: %s: %d%s", kind, entry["count"], example)
    log.info("  splits: train %d, val %d, test %d; vocabulary %d tokens (min count %d), %d captions truncated to "
             "%d words", s["train"], s["val"], s["test"], v["size"], v["min_count"], v["captions_truncated"],
             v["max_length"])
    for split in ("val", "test"):
        if s[split] == 0:
            log.warning("  warning: the %s split is empty; --%s-size N holds out images that the dataset gives no "
                        "split", split, split)
    log.info("  report: %s", files.prepare_report)
