"""The variant table (`demo.bundle_layout.VARIANT_TABLE`): every list of variants derives from it, the bundle's
file names and manifest keys stay those existing bundles have, and a row that nothing builds fails loudly."""
from __future__ import annotations

import subprocess
import sys

import pytest

from demo import bundle_layout as layout
from demo.session_memory import MemoryOptions
from tests.helpers import REPO


def test_the_table_gives_the_names_existing_bundles_have():
    assert layout.MODEL_KEYS == {  # the manifest's keys: a bundle exported before the table must still load
        "encoder.onnx": "encoder", "encoder.int8.onnx": "encoder_int8", "decoder_step.onnx": "decoder_step",
        "image_projection.onnx": "image_projection", "decoder_step_topk.onnx": "decoder_step_topk",
        "decoder_step_topk.int8.onnx": "decoder_step_topk_int8"}
    assert list(layout.GRAPH_IO) == list(layout.MODEL_KEYS)
    assert (layout.VARIANTS, layout.DECODER_VARIANTS, layout.QUANTIZED) == (("fp32", "int8"), ("fp32", "int8"),
                                                                            ("int8",))
    assert layout.runtime_files("int8", "fp32") == ("encoder.int8.onnx", "encoder.int8.onnx.data",
                                                    "image_projection.onnx", "decoder_step_topk.onnx", "vocab.json")


def test_each_encoder_session_takes_its_rows_memory_options():
    assert layout.get_variant("fp32").encoder_memory == MemoryOptions(arena=False, prepack=False)
    assert layout.get_variant("int8").encoder_memory == MemoryOptions(arena=False)  # its kernels need prepacking


def test_the_page_and_card_start_with_the_default_and_the_space_ships_the_smallest():
    assert layout.preferred(["int8", "fp32"]) == "fp32" and layout.preferred(["int8"]) == "int8"
    assert layout.smallest(["fp32", "int8"]) == "int8" and layout.smallest([]) == layout.DEFAULT_VARIANT


def test_a_name_not_in_the_table_is_refused_by_name():
    with pytest.raises(ValueError, match="no encoder variant 'fp16': one of fp32, int8"):
        layout.encoder_file("fp16")
    with pytest.raises(ValueError, match="unknown variant 'fp16'"):
        layout.get_variant("fp16")


def test_a_row_needs_its_file_and_key_together():
    with pytest.raises(ValueError, match="both its file and its manifest key"):
        layout.Variant("fp16", "encoder.fp16.onnx", None, None, None, MemoryOptions(), 16, "half", quantized=True)


def test_a_quantized_variant_nothing_builds_stops_the_export_at_import():
    """A new row with `quantized=True` and no entry in `export.bundle.QUANTIZERS` must not export silently."""
    code = ("import demo.bundle_layout as layout\n"
            "layout.QUANTIZED = (*layout.QUANTIZED, 'fp16')\n"
            "import export.bundle\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "ImportError: export.bundle.QUANTIZERS has ['int8']" in result.stderr, \
        result.stderr[-2000:]
    import export.bundle

    assert set(export.bundle.QUANTIZERS) == set(layout.QUANTIZED)
