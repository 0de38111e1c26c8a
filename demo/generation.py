"""`GenerationConfig`: every option of a caption search, with its default and its checks, in one object.

Its fields carry the names and meanings of Hugging Face's `GenerationConfig`. The `caption` CLI's flags, the
page's controls and the API's parameters, `train evaluate`, the export's caption checks, the model card's example
and the benchmarks all derive from it, so a caption asked for without options is the same caption everywhere and
a new field is a new option everywhere that lists options.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields, replace

from demo import config_flags
from demo.config_flags import option
from demo.errors import BadInput


@dataclass(frozen=True)
class GenerationConfig:
    """How to search one image's captions; `Captioner.caption(images, config)` and the rest take it."""

    num_beams: int = option(1, "1 is greedy search; more keeps that many beams")
    max_length: int | None = option(None, "longest caption in words (default: the vocabulary's, the longest "
                                          "training caption kept)")
    length_penalty: float = option(0.5, "GNMT alpha for ranking finished captions: 0 ranks by log-probability, "
                                        "larger favours longer captions")
    num_return_sequences: int = option(1, "captions to list per image (at most num_beams)")
    no_repeat_ngram_size: int = option(0, "no n-gram of this many words appears twice in a caption (0: off)")

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise BadInput("num_beams must be at least 1")
        if self.max_length is not None and self.max_length < 1:
            raise BadInput("max_length must be at least 1")
        if self.length_penalty < 0:
            raise BadInput("length_penalty must be >= 0")
        if not 1 <= self.num_return_sequences <= self.num_beams:
            raise BadInput("num_return_sequences must be between 1 and num_beams")
        if self.no_repeat_ngram_size < 0:
            raise BadInput("no_repeat_ngram_size must be >= 0 (0: off)")

    def replace(self, **changes) -> GenerationConfig:
        """A copy with some fields changed; an unknown name is refused with the ones there are. Fewer beams than
        this config lists, with no new count to list, list them all (`compare(image, num_beams=2)`)."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise BadInput(f"unknown generation option {', '.join(unknown)} (options: {', '.join(field_names())})")
        if "num_return_sequences" not in changes and "num_beams" in changes:
            changes["num_return_sequences"] = max(1, min(self.num_return_sequences, changes["num_beams"]))
        return replace(self, **changes)

    def greedy(self) -> GenerationConfig:
        """The same options for greedy search: the left side of the page's comparison."""
        return replace(self, num_beams=1, num_return_sequences=1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GenerationConfig:
        return cls().replace(**values)


@dataclass(frozen=True)
class AppDefaults:
    """What the app, the Space and the benchmarks show beside the search options' own defaults."""

    max_num_beams: int = 10  # the widest beam the app offers; the exported decoder's top-k covers it (2x)
    max_length_without_vocabulary: int = 20  # a `SearchOptions` built by hand, with no vocabulary to ask

    @property
    def top_k(self) -> int:
        """Words per row a decoder step returns: beam search of width k needs each row's 2k best."""
        return 2 * self.max_num_beams


DEFAULTS = AppDefaults()
GENERATION = GenerationConfig()  # what a caption asked for without options gets
# the beam side of "greedy and beam side by side" (the page, the Space, the benchmarks), listing 3 of its beams
COMPARED = GenerationConfig(num_beams=3, num_return_sequences=3)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(GenerationConfig))


def generation_option(name: str):
    """A field of another command's config that is this option: the same default and help (`train evaluate`)."""
    spec = next(f for f in fields(GenerationConfig) if f.name == name)
    return option(spec.default, spec.metadata["help"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--flag-name` per option, typed, explained and defaulted from the field."""
    group = parser.add_argument_group("generation options (as in Hugging Face's GenerationConfig)")
    config_flags.add_arguments(group, GenerationConfig)


def from_args(args: argparse.Namespace) -> GenerationConfig:
    """The config the flags of `add_arguments` give; raises `BadInput` for values the checks refuse."""
    return config_flags.from_args(GenerationConfig, args)
