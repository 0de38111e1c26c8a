"""`python -m export` on a small trained synthetic run: a bundle that ONNX Runtime alone can use.

Slow: trains for two epochs, then exports (VGG16 through tf2onnx, parity
checks, int8 quantization) more than once.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, caption_differences, run_module

pytestmark = pytest.mark.slow


def test_bundle_has_every_file_with_matching_manifest(exported_run):
    from demo.artifacts import sha256_file
    from demo.manifest import verify_bundle

    bundle = exported_run / "onnx"
    manifest = verify_bundle(bundle)
    assert sorted(manifest["files"]) == ["decoder_step.onnx", "decoder_step_image.onnx", "encoder.int8.onnx",
                                        "encoder.onnx", "image_projection.onnx", "vocab.json"]
    for name, record in manifest["files"].items():
        assert sha256_file(bundle / name) == record["sha256"]
    assert manifest["vocab_size"] == len(json.loads((bundle / "vocab.json").read_text())["tokens"])
    assert manifest["hidden_size"] == 256 and manifest["opset"] == 17
    encoder = manifest["models"]["encoder"]
    assert encoder["inputs"] == [{"name": "pixels", "shape": [None, 224, 224, 3], "dtype": "tensor(uint8)"}]
    assert encoder["outputs"] == [{"name": "features", "shape": [None, 4096], "dtype": "tensor(float)"}]
    decoder = manifest["models"]["decoder_step"]
    assert [i["name"] for i in decoder["inputs"]] == ["features", "token", "h", "c"]
    assert [o["name"] for o in decoder["outputs"]] == ["log_probs", "h_out", "c_out"]
    assert not list(exported_run.glob(".onnx-tmp-*")), "the work folder is gone after a good export"


def test_parity_figures_are_recorded_and_within_bounds(exported_run):
    parity = json.loads((exported_run / "onnx" / "manifest.json").read_text())["parity"]
    assert parity["encoder"]["images"] >= 16
    assert parity["encoder"]["max_abs_diff_relative_to_feature_scale"] <= 1e-4
    assert parity["decoder"]["max_abs_diff"]["log_probs"] <= 1e-4
    captions = parity["captions"]
    for key in ("greedy", "beam_3", "split_greedy", "split_beam_3"):  # near-ties: see test_near_ties.py
        assert captions[f"{key}_identical"] + captions[f"{key}_near_ties"] == captions["images"] > 0, key
    int8 = parity["encoder_int8"]
    assert int8["cosine_mean"] >= 0.99 and int8["bytes"]["int8"] < int8["bytes"]["fp32"] / 3


def test_onnx_checker_passes_on_every_model(exported_run):
    import onnx

    for name in ("encoder.onnx", "encoder.int8.onnx", "decoder_step.onnx", "image_projection.onnx",
                 "decoder_step_image.onnx"):
        onnx.checker.check_model(str(exported_run / "onnx" / name), full_check=True)


ORT_ONLY = """
import json, sys
import numpy as np
import onnxruntime as ort
from demo.search.greedy_search import greedy_search
from demo.manifest import verify_bundle
from demo.onnx_step import OnnxStepModel
from demo.preprocess import load_image
from demo.search.step import SearchOptions
from demo.vocab import Vocabulary
bundle, images = sys.argv[1], sys.argv[2:]
manifest = verify_bundle(bundle)
vocab = Vocabulary.load(f"{bundle}/vocab.json", expected_size=manifest["vocab_size"])
encoder = ort.InferenceSession(f"{bundle}/encoder.onnx", providers=["CPUExecutionProvider"])
step = OnnxStepModel(ort.InferenceSession(f"{bundle}/decoder_step.onnx", providers=["CPUExecutionProvider"]))
features = encoder.run(["features"], {"pixels": np.stack([load_image(p) for p in images])})[0]
options = SearchOptions(max_length=vocab.max_length, banned_ids=(vocab.pad_id, vocab.start_id, vocab.unk_id))
found = greedy_search(step, features, vocab.start_id, vocab.end_id, options)
print(json.dumps({"captions": [" ".join(vocab.decode(h.tokens)) for h in found],
                  "tensorflow_loaded": any(m.split(".")[0] in ("tensorflow", "keras", "tf2onnx")
                                           for m in sys.modules)}))
"""


def test_bundle_captions_with_onnx_runtime_alone(exported_run):
    captions = json.loads((exported_run / "captions.json").read_text())
    root = Path(captions["image_root"])
    images = [str(root / e["id"]) for e in captions["images"] if e["split"] == "test"][:3]
    result = subprocess.run([sys.executable, "-c", ORT_ONLY, str(exported_run / "onnx"), *images], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout)
    assert output["tensorflow_loaded"] is False
    from demo.captioner import Captioner

    captioner = Captioner(exported_run / "onnx", provider="cpu")  # the split decoder; the script used the whole one
    runtime = [r.caption for r in captioner.caption(images)]
    assert not caption_differences(captioner, images, output["captions"], runtime, 1), (output["captions"], runtime)


def test_a_failed_export_leaves_the_previous_bundle_untouched(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    before = (run / "onnx" / "manifest.json").read_bytes()
    (run / "model.keras").write_bytes(b"not a keras file")
    result = run_module("export", "--run", str(run))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "previous bundle" in result.stderr
    assert (run / "onnx" / "manifest.json").read_bytes() == before
    assert not list(run.glob(".onnx-tmp-*"))


def test_sigkill_during_export_keeps_the_previous_bundle(exported_run, tmp_path):
    from demo.manifest import verify_bundle

    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    before = (run / "onnx" / "manifest.json").read_bytes()
    process = subprocess.Popen([sys.executable, "-m", "export", "--run", str(run)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(run.glob(".onnx-tmp-*/conv.onnx")):
        assert process.poll() is None, "export ended before it could be interrupted"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (run / "onnx" / "manifest.json").read_bytes() == before
    verify_bundle(run / "onnx")
    from export.bundle import _remove_stale_work_dirs

    _remove_stale_work_dirs(run)
    assert not list(run.glob(".onnx-tmp-*")), "the killed export's work folder is cleaned up by the next one"


def test_parity_check_catches_a_wrong_encoder(exported_run, tmp_path):
    from export.parity import ParityError, encoder_parity

    pixels = np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)
    os.symlink(exported_run / "onnx" / "encoder.onnx", tmp_path / "encoder.onnx")
    np.save(tmp_path / "reference_encoder_pixels.npy", pixels)
    from export.parity import cpu_session, encode

    features = encode(cpu_session(tmp_path / "encoder.onnx"), pixels)
    np.save(tmp_path / "reference_encoder_features.npy", features)
    assert encoder_parity(tmp_path)["max_abs_diff_relative_to_feature_scale"] <= 1e-6
    np.save(tmp_path / "reference_encoder_features.npy", features * 1.001)
    with pytest.raises(ParityError, match="differs from Keras"):
        encoder_parity(tmp_path)


def test_export_without_a_trained_model_says_what_to_run(tmp_path):
    result = run_module("export", "--run", str(tmp_path / "empty"))
    assert result.returncode == 2 and "python -m train fit" in result.stderr
