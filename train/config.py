"""Configuration dataclasses for each command, and their command-line form.

Every field has a default; `add_arguments` exposes each one as `--field-name`
with the field's `help` metadata, so the CLI and the code can never disagree
about a default.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
DATASETS = ("synthetic", "flickr8k", "flickr30k", "karpathy")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class PrepareConfig:
    run: Path = _opt(Path("models/default"), "run folder to create or update")
    dataset: str = _opt("synthetic", "which dataset layout to read", choices=DATASETS)
    data_dir: Path | None = _opt(
        None, "dataset folder (synthetic: where scenes are generated; default RUN/synthetic)"
    )
    images_dir: Path | None = _opt(None, "image folder, when it is not where the layout expects it")
    num_images: int = _opt(3000, "synthetic only: number of scenes to generate")
    min_count: int | None = _opt(None, "keep words seen at least this often in training captions "
                                       "(default: 5 for real data, 1 for synthetic)")
    max_length: int = _opt(30, "longest caption in words; longer ones are truncated and counted")
    max_vocab: int | None = _opt(None, "cap on vocabulary size, special tokens included")
    val_size: int | None = _opt(None, "images held out for validation where the dataset has no split "
                                      "(default: 5%% of images, at most 1000)")
    test_size: int | None = _opt(None, "images held out for testing where the dataset has no split "
                                       "(default: 5%% of images, at most 1000)")
    seed: int = _opt(0, "seed for synthetic scenes and split assignment")
    workers: int = _opt(2, "threads that decode images while checking them")


@dataclass
class FeaturesConfig:
    run: Path = _opt(Path("models/default"), "run folder made by `prepare`")
    vgg_weights: str = _opt(
        "imagenet",
        "'imagenet' (downloaded by Keras), a path to a local VGG16 .h5 weights file, "
        "or 'none' for a seeded random init (offline work and the synthetic dataset only)",
    )
    batch_size: int = _opt(16, "images per forward pass")
    workers: int = _opt(2, "threads that decode images ahead of the forward pass")
    seed: int = _opt(0, "seed of the random init used with --vgg-weights none")
    overwrite: bool = _opt(False, "discard an existing cache built with other settings")


def _base_type(tp: Any) -> Any:
    """The concrete type behind `X | None`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one `--option` per dataclass field, typed and documented from the field."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        if tp is bool:
            parser.add_argument(flag, action="store_true", default=f.default, help=help_text)
            continue
        default_text = "" if f.default is None else f" (default: {f.default})"
        choices = f.metadata.get("choices")
        parser.add_argument(
            flag, type=tp, default=f.default, choices=choices,
            help=help_text + default_text, metavar=None if choices else f.name.upper(),
        )


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def to_json(config: Any) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}
