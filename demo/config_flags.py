"""Command-line flags derived from a configuration dataclass: one `--flag-name` per field, typed and explained
from the field (`option(default, help)`), and back. The train, evaluate and caption commands all use it."""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def option(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


def nested(default: Any, skip: tuple[str, ...] = ()) -> Any:
    """A field holding another config (frozen, as its default is shared): its fields become this command's flags,
    all but `skip`, so an option added to it is an option of every command that nests it."""
    return field(default=default, metadata={"nested": True, "skip": skip})


def base_type(tp: Any) -> Any:
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
        if f.metadata.get("nested"):
            add_arguments(parser, hints[f.name], skip=f.metadata["skip"])
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        if tp is bool:
            parser.add_argument(flag, action="store_true", default=f.default, help=help_text)
            continue
        default_text = "" if f.default is None else f" (default: {f.default})"
        choices = f.metadata.get("choices")
        extra = {"nargs": f.metadata["nargs"]} if "nargs" in f.metadata else {}
        if typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        parser.add_argument(
            flag, type=tp, default=f.default, choices=choices,
            help=help_text + default_text, metavar=None if choices else f.name.upper(), **extra,
        )


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    values = {f.name: _nested_from_args(f, args) if f.metadata.get("nested") else getattr(args, f.name)
              for f in dataclasses.fields(cls) if f.metadata.get("nested") or hasattr(args, f.name)}
    return cls(**{k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()})


def _nested_from_args(f: dataclasses.Field, args: argparse.Namespace) -> Any:
    """The nested config's default with the flags it has here (`nested`'s `skip` keep the default's values)."""
    given = {n.name: getattr(args, n.name) for n in dataclasses.fields(f.default) if hasattr(args, n.name)
             and n.name not in f.metadata["skip"]}
    return dataclasses.replace(f.default, **given)


def to_arguments(config: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """The command-line options that give `config` back through `add_arguments` and `from_args`."""
    arguments: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("nested"):
            arguments += to_arguments(value, skip=f.metadata["skip"])
            continue
        if f.name in skip or value is None or value is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        if value is True:
            arguments.append(flag)
        elif isinstance(value, (list, tuple)):
            arguments += [flag, *map(str, value)]
        else:
            arguments += [flag, str(value)]
    return arguments


def to_json(config: Any) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}
