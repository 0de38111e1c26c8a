"""`GenerationConfig`: every option of a caption search, with its default and its checks, in one object.

Its fields carry the names and meanings of Hugging Face's `GenerationConfig`. The `caption` CLI's flags, the
page's controls and the API's parameters, `train evaluate`, the export's caption checks, the model card's example
and the benchmarks all derive from it, so a caption asked for without options is the same caption everywhere and
a new field is a new option everywhere that lists options.
"""
from __future__ import annotations

import argparse
import typing
from dataclasses import asdict, dataclass, fields, replace

from demo import config_flags
from demo.config_flags import option
from demo.errors import BadInput


@dataclass(frozen=True)
class AppDefaults:
    """What the app, the Space and the benchmarks show beside the search options' own defaults."""

    max_num_beams: int = 10  # the widest beam the app offers; the exported decoder's top-k covers it (2x)
    max_length_without_vocabulary: int = 20  # a `SearchOptions` built by hand, with no vocabulary to ask
    max_served_length: int = 40  # a server's longest caption: one request cannot hold a worker for long

    @property
    def top_k(self) -> int:
        """Words per row a decoder step returns: beam search of width k needs each row's 2k best."""
        return 2 * self.max_num_beams


DEFAULTS = AppDefaults()


@dataclass(frozen=True)
class Control:
    """How the page shows an option: a slider's range, step and label (`demo.web.page` builds one per field)."""

    minimum: float
    maximum: float
    step: float
    label: str


@dataclass(frozen=True)
class GenerationConfig:
    """How to search one image's captions; `Captioner.caption(images, config)` and the rest take it."""

    # The order is the API's positional order (after the image; the variants come after the first four): a new
    # option goes last, so calls written before it keep working.
    num_beams: int = option(1, "1 is greedy search; more keeps that many beams",
                            control=Control(1, DEFAULTS.max_num_beams, 1, "Beam width"))
    max_length: int | None = option(None, "longest caption in words (default: the vocabulary's, the longest "
                                          "training caption kept)",
                                    control=Control(5, DEFAULTS.max_served_length, 1, "Maximum length (words)"))
    length_penalty: float = option(0.5, "GNMT alpha for ranking finished captions: 0 ranks by log-probability, "
                                        "larger favours longer captions",
                                   control=Control(0.0, 2.0, 0.1, "Length penalty (GNMT alpha)"))
    num_return_sequences: int = option(1, "captions to list per image (at most num_beams)",
                                       control=Control(1, DEFAULTS.max_num_beams, 1, "Beams to list"))
    # the slider stops at 4: longer n-grams rarely repeat in a caption
    no_repeat_ngram_size: int = option(0, "no n-gram of this many words appears twice in a caption (0: off)",
                                       control=Control(0, 4, 1, "No repeated n-gram of this many words (0: off)"))

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
        known = [f.name for f in fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise BadInput(f"unknown generation option {', '.join(unknown)} (options: {', '.join(known)})")
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


GENERATION = GenerationConfig()  # what a caption asked for without options gets
# the beam side of "greedy and beam side by side" (the page, the Space, the benchmarks), listing 3 of its beams
COMPARED = GenerationConfig(num_beams=3, num_return_sequences=3)


def check_served(config: GenerationConfig) -> GenerationConfig:
    """`config` if a server answers it (the page, its API and the HTTP API): no caption longer than
    `DEFAULTS.max_served_length`, beyond the config's own checks."""
    if config.max_length is not None and config.max_length > DEFAULTS.max_served_length:
        raise BadInput(f"max_length must be at most {DEFAULTS.max_served_length} on this server, not "
                       f"{config.max_length}")
    return config


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(GenerationConfig))


def control(name: str) -> Control:
    return next(f for f in fields(GenerationConfig) if f.name == name).metadata["control"]


def field_type(name: str) -> type:
    """The option's value type (`int` for `int | None`): what a value from a form or a query is turned into."""
    return config_flags.base_type(typing.get_type_hints(GenerationConfig)[name])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--flag-name` per option, typed, explained and defaulted from the field."""
    group = parser.add_argument_group("generation options (as in Hugging Face's GenerationConfig)")
    config_flags.add_arguments(group, GenerationConfig)


def from_args(args: argparse.Namespace) -> GenerationConfig:
    """The config the flags of `add_arguments` give; raises `BadInput` for values the checks refuse."""
    return config_flags.from_args(GenerationConfig, args)
