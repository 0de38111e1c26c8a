"""Every check that can refuse an export, made to fire through `python -m export` itself.

Each test runs the real export (TensorFlow children, tf2onnx, ONNX Runtime) on a
copy of the exported run, with one fault planted where that check must catch
it: a decoder whose output bias moved, a top-k step that no longer matches
the whole one, Keras captions the ONNX decoder does not reproduce, an fc2
kernel scaled by 1%, an int8 bound no int8 encoder meets. Each must exit 2
with the check's message, install nothing and leave the previous bundle as it
was. Turning any of those raises into a warning makes its test fail.

Slow: each export runs at least the decoder child (~15 s); the encoder and
int8 cases reuse the shared build's VGG16 conversion (`export.conv_cache`) and
run the Keras reference child; the int8 case plants the build's int8 encoder instead of quantizing again.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import export.bundle
import export.int8
from demo import bundle_layout as layout
from demo.artifacts import sha256_file
from export import conv_cache
from export.__main__ import main as export_main
from export.feature_encoder import FOLDER as FEATURE_ENCODER
from export.feature_encoder import RECORD
from export.parity import REFERENCE_CAPTIONS
from tests.helpers import linked_copy

pytestmark = pytest.mark.slow

SMALL = ("--parity-images", "2", "--calibration-images", "2", "--int8-eval-images", "4")


def nudge_output_bias(path: Path, vocab_size: int) -> None:
    """Move the output layer's bias (the only initializer of shape (V,)) by up to 0.05: log-probs shift ~1e-2."""
    proto = onnx.load_model(path)
    biases = [t for t in proto.graph.initializer if list(t.dims) == [vocab_size]]
    assert len(biases) == 1, f"{path.name}: expected one ({vocab_size},) initializer, found {len(biases)}"
    value = numpy_helper.to_array(biases[0])
    biases[0].CopyFrom(numpy_helper.from_array(value + np.linspace(0, 0.05, vocab_size, dtype=value.dtype),
                                               biases[0].name))
    onnx.save_model(proto, path)


def export_refused(run: Path, capsys, *args: str) -> str:
    """Run `python -m export` in this process; assert it refused and installed nothing; return its stderr."""
    bundle = run / layout.BUNDLE_DIR
    before = {p.name: p.read_bytes() for p in [bundle / layout.MANIFEST, bundle / layout.VOCAB]}
    code = export_main(["--run", str(run), *SMALL, *args])
    stderr = capsys.readouterr().err
    assert code == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert "nothing was installed; the previous bundle (if any) is unchanged" in stderr
    assert {p.name: p.read_bytes() for p in [bundle / layout.MANIFEST, bundle / layout.VOCAB]} == before
    assert not list(run.glob(".onnx-tmp-*")), "the refused export's work folder is removed"
    assert not (run / f"{layout.BUNDLE_DIR}.previous").exists()
    return stderr


def after_child(monkeypatch, part: str, plant) -> None:
    """Plant a fault in the work folder right after the real TensorFlow child `part` has written it."""
    real = export.bundle._child

    def child(name, files, work, cfg, *extra):
        peak = real(name, files, work, cfg, *extra)
        if name == part:
            plant(work)
        return peak

    monkeypatch.setattr(export.bundle, "_child", child)


def vocab_size(run: Path) -> int:
    return len(json.loads((run / "vocab.json").read_text())["tokens"])


def test_a_decoder_that_differs_from_keras_is_refused(exported_run, tmp_path, capsys, monkeypatch):
    run = linked_copy(exported_run, tmp_path)
    after_child(monkeypatch, "decoder", lambda work: nudge_output_bias(work / layout.DECODER_STEP, vocab_size(run)))
    stderr = export_refused(run, capsys)
    assert "error: decoder_step.onnx log-probabilities differ from Keras by" in stderr


def test_a_top_k_step_that_differs_from_the_whole_one_is_refused(exported_run, tmp_path, capsys, monkeypatch):
    run = linked_copy(exported_run, tmp_path)
    real_split = export.bundle.split_decoder

    def split_wrongly(whole, projection, step, end_id, top_k):
        real_split(whole, projection, step, end_id, top_k)
        nudge_output_bias(step, vocab_size(run))

    monkeypatch.setattr(export.bundle, "split_decoder", split_wrongly)
    stderr = export_refused(run, capsys)
    assert "error: the top-k decoder step differs from decoder_step.onnx by" in stderr


def test_captions_that_differ_from_keras_are_refused(exported_run, tmp_path, capsys, monkeypatch):
    """Keras' greedy captions each get one more word: far outside a near-tie, so no image may pass."""
    run = linked_copy(exported_run, tmp_path)

    def lengthen_greedy(work: Path) -> None:
        captions = json.loads((work / REFERENCE_CAPTIONS).read_text())
        captions["greedy"] = [tokens + tokens[-1:] for tokens in captions["greedy"]]
        (work / REFERENCE_CAPTIONS).write_text(json.dumps(captions))

    after_child(monkeypatch, "decoder", lengthen_greedy)
    stderr = export_refused(run, capsys)
    test_images = len(json.loads((run / "splits.json").read_text())["test"])
    assert f"error: {test_images} of {test_images} greedy captions differ between Keras and the exported decoder " \
           "(decoder_step)" in stderr


def test_an_encoder_that_differs_from_keras_is_refused(exported_run, tmp_path, capsys, monkeypatch):
    """fc2's kernel scaled by 1.01 in the ONNX graph only: features move by ~1% of their scale (bound 1e-4). The
    copy leaves out the encoder the features were computed with, so the export appends fc1 and fc2 itself."""
    run = linked_copy(exported_run, tmp_path, without=(FEATURE_ENCODER,))
    real_weights = export.bundle.vgg16_weights

    def scaled_fc2(spec):
        for name, kernel, bias in real_weights(spec):
            yield name, (kernel * np.float32(1.01) if name == "fc2" else kernel), bias

    monkeypatch.setattr(export.bundle, "vgg16_weights", scaled_fc2)
    stderr = export_refused(run, capsys)
    assert "error: encoder.onnx differs from Keras by" in stderr and "of the feature scale (allowed 1e-04)" in stderr
    assert "reusing VGG16's convolutional part" in stderr and "with tf2onnx" not in stderr, "the run's conversion"


def test_a_kept_feature_encoder_is_checked_like_a_new_one(exported_run, tmp_path, capsys):
    """The encoder the features were computed with, its last 4096 x 4096 + 4096 floats (fc2's weights, appended
    last) scaled by 1.01 and its record rewritten to vouch for the new bytes: the export copies it, and refuses it."""
    run = linked_copy(exported_run, tmp_path, without=(FEATURE_ENCODER,))
    kept = run / conv_cache.CACHE_DIR / FEATURE_ENCODER
    shutil.copytree(exported_run / conv_cache.CACHE_DIR / FEATURE_ENCODER, kept)  # copies: the build stays intact
    weights = np.memmap(kept / layout.external_data(layout.DEFAULT_ENCODER), dtype=np.float32, mode="r+")
    weights[-(4096 * 4096 + 4096):] *= np.float32(1.01)
    weights.flush()
    del weights
    record = json.loads((kept / RECORD).read_text())
    record["sha256"] = {name: sha256_file(kept / name) for name in record["sha256"]}
    (kept / RECORD).write_text(json.dumps(record))
    stderr = export_refused(run, capsys)
    assert "reusing the encoder the feature cache was computed with" in stderr
    assert "error: encoder.onnx differs from Keras by" in stderr


def test_an_int8_encoder_below_the_cosine_bound_is_refused(exported_run, tmp_path, capsys, monkeypatch):
    """No int8 encoder reaches a mean cosine above 1: the gate must refuse whatever the quantizer made. The
    quantizer's output is planted: the build's own int8 encoder of these same weights, so the gate measures a
    real int8 graph without quantizing VGG16 again."""
    run = linked_copy(exported_run, tmp_path)
    built = exported_run / layout.BUNDLE_DIR / layout.encoder_file("int8")

    def planted(fp32_path: Path, int8_path: Path, calibration: list[Path]) -> None:
        for suffix in ("", ".data"):
            shutil.copyfile(f"{built}{suffix}", f"{int8_path}{suffix}")

    monkeypatch.setattr(export.int8, "quantize_encoder", planted)
    monkeypatch.setattr(export.int8, "MIN_MEAN_COSINE", 1.01)
    stderr = export_refused(run, capsys, "--quantize", "int8")
    assert "error: the int8 encoder is too far from fp32 (mean feature cosine" in stderr
    assert "< 1.01); export without --quantize int8" in stderr


def test_an_unreadable_model_is_refused_before_any_conversion(exported_run, tmp_path, capsys):
    run = linked_copy(exported_run, tmp_path)
    (run / "model.keras").unlink()
    (run / "model.keras").write_bytes(b"not a keras file")
    stderr = export_refused(run, capsys)
    assert "model.keras" in stderr and "converting VGG16" not in stderr
