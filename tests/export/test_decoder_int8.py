"""The int8 decoder's gate: shipped when its greedy captions match fp32's, left out (saying why) when not.

Which way the gate goes for a given model depends on its weights (and so on the CPU that trained it), so
each outcome is forced by moving the bounds: the quantization, the decoding and the measuring are real.
"""
import shutil

import pytest

from demo import bundle_layout as layout
from demo.vocab import Vocabulary
from train.captions_file import read_captions
from train.feature_cache import load_cache
from train.run_files import RunFiles

pytestmark = pytest.mark.slow  # needs the exported session run


@pytest.fixture
def work(exported_run, tmp_path):
    """An export's work folder at the point where the int8 decoder is built: the fp32 decoder files."""
    for name in (layout.IMAGE_PROJECTION, layout.decoder_file("fp32")):
        shutil.copyfile(exported_run / "onnx" / name, tmp_path / name)
    files = RunFiles(exported_run)
    captions = read_captions(files.captions)
    test = captions.split("test")
    return tmp_path, Vocabulary.load(files.vocab), load_cache(files).lookup([e.id for e in test]), \
        [e.references() for e in test]


@pytest.mark.parametrize("bounds, shipped", [((0.0, 1.0), True), ((1.01, 1.0), False), ((0.0, -1.0), False)])
def test_the_variant_is_shipped_only_within_both_bounds(work, monkeypatch, bounds, shipped):
    from export import decoder_int8

    folder, vocab, features, references = work
    monkeypatch.setattr(decoder_int8, "MIN_IDENTICAL_GREEDY", bounds[0])
    monkeypatch.setattr(decoder_int8, "MAX_BLEU_4_CHANGE", bounds[1])
    result = decoder_int8.build_int8_decoder(folder, vocab, features, references)
    assert result["shipped"] is shipped
    assert (folder / layout.decoder_file("int8")).is_file() is shipped
    assert result["evaluation_images"] == len(features) and 0.0 <= result["greedy_identical_fraction"] <= 1.0
    assert result["bytes"]["int8"] < result["bytes"]["fp32"]
    if not shipped:
        assert "left out" in result["why"] and f"{result['greedy_identical_fraction']:.1%}" in result["why"]
