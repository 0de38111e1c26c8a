"""The one table of datasets: each `--dataset` name with its loader, its vocabulary default and the model card's
words for it.

`python -m train prepare --dataset` and `python -m pipeline --dataset` take their choices from it, `prepare`
finds its loader here, and the model card (`export.model_card`) its wording: a new dataset is its loader module
plus one row. Light on purpose (no TensorFlow): the export's parent process imports it through the card.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from demo.errors import BadInput
from train.datasets import flickr8k, flickr30k, folder, karpathy, synthetic
from train.datasets.records import LoadedDataset
from train.run_files import RunFiles


@dataclass(frozen=True)
class DatasetSource:
    """Where and how much to load: what `prepare`'s options say about the data (a loader uses what it needs)."""

    data_dir: Path
    images_dir: Path | None = None
    num_images: int = 3000  # a generated dataset's size
    seed: int = 0


@dataclass(frozen=True)
class CardWords:
    """How the model card names a dataset: `noun` follows an image count, `describes` ends the summary."""

    noun: str
    describes: str
    photos: bool = True


@dataclass(frozen=True)
class DatasetEntry:
    name: str  # the `--dataset` choice
    load: Callable[[DatasetSource], LoadedDataset]
    # The card's words by the name the loader records (`LoadedDataset.name`, `prepare_report.json`'s `dataset`):
    # one for most loaders, one per source for a loader that reads several (Karpathy's JSON files).
    card: Mapping[str, CardWords]
    min_count: int = 5  # the vocabulary's default `--min-count`
    default_data_dir: Callable[[Path], Path] | None = None  # from the run folder; None: `--data-dir` is required

    def __post_init__(self):
        if not self.card:
            raise ValueError(f"dataset {self.name}: the model card needs its words (DatasetEntry.card)")


def _parsed(load: Callable[[Path, Path | None], LoadedDataset]) -> Callable[[DatasetSource], LoadedDataset]:
    """A loader that parses files on disk (`load(data_dir, images_dir)`), as the table calls it."""
    return lambda source: load(source.data_dir, source.images_dir)


def _photos(name: str, subjects: str = "everyday scenes with people and animals") -> CardWords:
    return CardWords(f"{name} photos", f"{subjects}, in the style of {name}'s captions")


DATASETS = (
    DatasetEntry(synthetic.NAME,
                 lambda s: synthetic.generate(s.data_dir, num_images=s.num_images, seed=s.seed),
                 {synthetic.NAME: CardWords("synthetic scenes (coloured shapes on plain backgrounds)",
                                            "shapes, their colours, sizes and positions — not photos",
                                            photos=False)},
                 min_count=1, default_data_dir=lambda run: RunFiles(run).synthetic_dir),
    DatasetEntry(flickr8k.NAME, _parsed(flickr8k.load), {flickr8k.NAME: _photos("Flickr8k")}),
    DatasetEntry(flickr30k.NAME, _parsed(flickr30k.load), {flickr30k.NAME: _photos("Flickr30K")}),
    DatasetEntry("karpathy", _parsed(karpathy.load), {
        "karpathy-flickr8k": _photos("Flickr8k"), "karpathy-flickr30k": _photos("Flickr30K"),
        "karpathy-coco": _photos("COCO", "everyday scenes of people, animals and objects")}),
    DatasetEntry(folder.NAME, _parsed(folder.load), {folder.NAME: CardWords(
        "images with the trainer's own captions (`--dataset folder`)", "what those captions describe")}),
)
BY_NAME = {entry.name: entry for entry in DATASETS}
NAMES = tuple(BY_NAME)  # the `--dataset` choices
CARD_WORDS = {recorded: words for entry in DATASETS for recorded, words in entry.card.items()}


def dataset_entry(name: str) -> DatasetEntry:
    if name not in BY_NAME:
        raise BadInput(f"unknown dataset {name!r} (known: {', '.join(NAMES)})")
    return BY_NAME[name]

