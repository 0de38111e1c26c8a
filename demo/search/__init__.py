"""Caption search over the step interface, for the Keras step model and the ONNX decoder alike.

`step` defines the interface and the options, `greedy_search` and `beam_search` the two searches;
this module is the one entry point: greedy when `num_beams` is 1, beam search otherwise.
"""
from __future__ import annotations

import numpy as np

from demo.generation import GENERATION, GenerationConfig
from demo.search.beam_search import beam_search
from demo.search.greedy_search import greedy_search
from demo.search.step import Hypothesis, SearchOptions, StepModel


def generate(model: StepModel, features: np.ndarray, start_id: int, end_id: int,
             options: SearchOptions) -> list[list[Hypothesis]]:
    """The n-best list of each image (a single caption for greedy), best first."""
    if options.num_beams == 1:
        return [[h] for h in greedy_search(model, features, start_id, end_id, options)]
    return beam_search(model, features, start_id, end_id, options)


def best(model: StepModel, features: np.ndarray, start_id: int, end_id: int,
         options: SearchOptions) -> list[Hypothesis]:
    """The best caption of each image."""
    return [n_best[0] for n_best in generate(model, features, start_id, end_id, options)]


def options_for(vocab, config: GenerationConfig = GENERATION) -> SearchOptions:
    """Search options for a vocabulary: `config`'s, field by field, with the length defaulting to the vocabulary's
    maximum, and <pad>, <start> and <unk> never generated."""
    return SearchOptions(**config.to_dict() | {"max_length": config.max_length or vocab.max_length,
                                               "banned_ids": (vocab.pad_id, vocab.start_id, vocab.unk_id)})
