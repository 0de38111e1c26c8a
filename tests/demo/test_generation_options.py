"""Every generation option reaches every place that lists options from `GenerationConfig` alone: the `caption`
and `train evaluate` flags, the page's controls and the API's parameters (in the frozen positional order), and
the searches' options. A field added to the config is checked here with no other edit to the test."""
from __future__ import annotations

import argparse
from pathlib import Path

from demo.generation import control, field_names

ORIGINAL_ORDER = ("image", "num_beams", "max_length", "length_penalty", "num_return_sequences", "variant",
                  "decoder_variant")  # what API callers wrote before later options existed


def flags_of(add_arguments) -> set[str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return {action.dest for action in parser._actions}


def test_the_caption_and_evaluate_commands_take_every_option():
    from demo import generation
    from train.config import EvaluateConfig, add_arguments, from_args

    assert set(field_names()) <= flags_of(generation.add_arguments)
    evaluate_flags = flags_of(lambda parser: add_arguments(parser, EvaluateConfig))
    assert set(field_names()) - {"num_beams", "num_return_sequences"} <= evaluate_flags
    parser = argparse.ArgumentParser()
    add_arguments(parser, EvaluateConfig)
    given = {name: control(name).maximum for name in field_names() if name in evaluate_flags}
    argv = [part for name, value in given.items() for part in (f"--{name.replace('_', '-')}", str(int(value)))]
    config = from_args(EvaluateConfig, parser.parse_args(argv)).generation(num_beams=2)
    assert {name: getattr(config, name) for name in given} == given and config.num_beams == 2


def test_the_api_lists_every_option_after_the_parameters_older_calls_send(tmp_path: Path):
    """The page built without a bundle (it then says how to build one): its `caption` endpoint's parameters."""
    from demo.captioner_pool import CaptionerPool
    from demo.web.page import build_app

    app = build_app(CaptionerPool(tmp_path / "no-bundle", provider="cpu"))
    parameters = [p["parameter_name"] for p in app.get_api_info()["named_endpoints"]["/caption"]["parameters"]]
    assert tuple(parameters[:len(ORIGINAL_ORDER)]) == ORIGINAL_ORDER
    assert set(parameters) == set(ORIGINAL_ORDER) | set(field_names()), "every option, once"
    explain = app.get_api_info()["named_endpoints"]["/explain"]["parameters"]
    assert [p["parameter_name"] for p in explain] == parameters, "/explain: the same call, the maps added"

