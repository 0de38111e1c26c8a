"""Generation defaults, named as in Hugging Face `generate`: the one place they are set.

The CLI, `Captioner`, the app, `train evaluate`, the export's caption checks
and the benchmarks all take their defaults from `DEFAULTS`, so a caption
asked for without options is the same caption everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationDefaults:
    num_beams: int = 1  # greedy, as `generate` does unless asked
    max_length: int | None = None  # words; None: the vocabulary's max_length (the longest training caption kept)
    length_penalty: float = 0.5  # GNMT alpha; 0, 0.5 and 1 measured within 0.005 BLEU-4 on synthetic val
    num_return_sequences: int = 1
    max_length_without_vocabulary: int = 20  # a `SearchOptions` built by hand, with no vocabulary to ask
    compared_num_beams: int = 3  # the beam side of "greedy and beam side by side": the app, the Space, the bench
    compared_num_return_sequences: int = 3  # how many of its beams the app lists
    max_num_beams: int = 10  # the widest beam the app offers; the exported decoder's top-k covers it (2x)

    @property
    def top_k(self) -> int:
        """Words per row a decoder step returns: beam search of width k needs each row's 2k best."""
        return 2 * self.max_num_beams


DEFAULTS = GenerationDefaults()
