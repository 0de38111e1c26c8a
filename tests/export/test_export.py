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

import pytest

from export.feature_encoder import FOLDER as FEATURE_ENCODER
from export.graph_edit import CONV_PART
from tests.helpers import REPO, caption_differences, linked_copy, run_module, split_images

pytestmark = pytest.mark.slow


def test_bundle_has_every_file_with_matching_manifest(exported_run):
    from demo.artifacts import sha256_file
    from demo.manifest import verify_bundle

    bundle = exported_run / "onnx"
    manifest = verify_bundle(bundle)
    assert manifest["version"] == 2
    int8_decoder = ["decoder_step_topk.int8.onnx"] if manifest["parity"]["decoder_int8"]["shipped"] else []
    assert sorted(manifest["files"]) == sorted(["decoder_step.onnx", "decoder_step_topk.onnx", *int8_decoder,
                                                "encoder.int8.onnx", "encoder.onnx", "image_projection.onnx",
                                                "encoder.int8.onnx.data", "encoder.onnx.data",
                                                "vocab.json", "README.md"])
    assert {m["file"] for m in manifest["models"].values()} == set(manifest["files"]) - {
        "vocab.json", "README.md", "encoder.onnx.data", "encoder.int8.onnx.data"}
    # the encoders' weights sit in their data files (mapped by ONNX Runtime), and their fc layers run on a zero row
    # too, so the fp32 encoder may run without prepacked weights (demo.bundle_layout.VARIANT_TABLE)
    assert manifest["files"]["encoder.onnx"]["bytes"] < 100_000 < manifest["files"]["encoder.onnx.data"]["bytes"]
    assert manifest["encoder_padded_rows"] is True
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
    topk = manifest["models"]["decoder_step_topk"]
    assert [i["name"] for i in topk["inputs"]] == ["image", "token", "h", "c", "rows", "ban"]
    assert [o["name"] for o in topk["outputs"]] == ["top_log_probs", "top_ids", "end_log_prob", "image_out", "h_out",
                                                    "c_out"]
    assert topk["outputs"][1]["shape"] == [None, manifest["top_k"]] and manifest["top_k"] >= 2 * 3, "beam 3 exact"
    assert not list(exported_run.glob(".onnx-tmp-*")), "the work folder is gone after a good export"


def test_the_bundle_has_a_model_card_with_the_manifests_figures(exported_run):
    """Written by the export before the manifest, from the same figures (export.model_card; content:
    tests/export/test_model_card.py)."""
    from demo.manifest import verify_bundle
    from demo.model_card import read_model_card

    manifest = verify_bundle(exported_run / "onnx")
    card = read_model_card(exported_run / "onnx")
    assert "README.md" in manifest["files"] and card is not None
    assert card.summary.startswith("**Trained on** 600 synthetic scenes") and "**· describes** shapes" in card.summary
    parity = manifest["parity"]
    assert "of the feature scale" in card.text and manifest["created"] in card.text
    assert f"feature cosine {parity['encoder_int8']['cosine_mean']:.4f}" in card.text
    assert ("left out of this bundle" in card.text) is not parity["decoder_int8"]["shipped"]


def test_parity_figures_are_recorded_and_within_bounds(exported_run):
    parity = json.loads((exported_run / "onnx" / "manifest.json").read_text())["parity"]
    assert parity["encoder"]["images"] >= 16
    assert parity["encoder"]["max_abs_diff_relative_to_feature_scale"] <= 1e-4
    assert parity["decoder"]["max_abs_diff"]["log_probs"] <= 1e-4
    captions = parity["captions"]
    for key in ("greedy", "beam_3", "topk_greedy", "topk_beam_3"):  # near-ties: see test_near_ties.py
        assert captions[f"{key}_identical"] + captions[f"{key}_near_ties"] == captions["images"] > 0, key
    assert max(parity["decoder_topk"]["max_abs_diff"].values()) <= 1e-4
    int8 = parity["encoder_int8"]
    assert int8["cosine_mean"] >= 0.99 and int8["bytes"]["int8"] < int8["bytes"]["fp32"] / 3
    assert {side: block["images"] for side, block in int8["scene"].items()} == {  # a synthetic run: scene scores
        "fp32": int8["evaluation_images"], "int8": int8["evaluation_images"]}, int8.get("scene")
    decoder_int8 = parity["decoder_int8"]  # shipped or not (the gate itself: tests/export/test_decoder_int8.py)
    assert decoder_int8["shipped"] in (True, False) and decoder_int8["bytes"]["int8"] < decoder_int8["bytes"]["fp32"]
    assert ("why" in decoder_int8) is not decoder_int8["shipped"], "a left-out int8 decoder says why"


def test_onnx_checker_passes_on_every_model(exported_run, tmp_path):
    """On a plain copy of the bundle: other tests hard-link the shared build's files, and onnx.checker refuses
    external data with more than one link (a hard-link attack, to it), whatever the graph."""
    import onnx

    bundle = shutil.copytree(exported_run / "onnx", tmp_path / "onnx")
    manifest = json.loads((bundle / "manifest.json").read_text())
    names = [name for name in manifest["files"] if name.endswith(".onnx")]
    assert {"encoder.onnx", "encoder.int8.onnx", "decoder_step.onnx", "image_projection.onnx",
            "decoder_step_topk.onnx"} <= set(names)
    for name in names:
        onnx.checker.check_model(str(bundle / name), full_check=True)


ORT_ONLY = """
import json, sys
import numpy as np
import onnxruntime as ort
from demo.search.greedy_search import greedy_search
from demo.manifest import verify_bundle
from demo.onnx_step import WholeStepModel
from demo.preprocess import load_image
from demo.search.step import SearchOptions, TopKStep
from demo.vocab import Vocabulary
bundle, images = sys.argv[1], sys.argv[2:]
manifest = verify_bundle(bundle)
vocab = Vocabulary.load(f"{bundle}/vocab.json", expected_size=manifest["vocab_size"])
encoder = ort.InferenceSession(f"{bundle}/encoder.onnx", providers=["CPUExecutionProvider"])
step = TopKStep(WholeStepModel(ort.InferenceSession(f"{bundle}/decoder_step.onnx",
                                                    providers=["CPUExecutionProvider"])), vocab.end_id)
features = encoder.run(["features"], {"pixels": np.stack([load_image(p) for p in images])})[0]
options = SearchOptions(max_length=vocab.max_length, banned_ids=(vocab.pad_id, vocab.start_id, vocab.unk_id))
found = greedy_search(step, features, vocab.start_id, vocab.end_id, options)
print(json.dumps({"captions": [" ".join(vocab.decode(h.tokens)) for h in found],
                  "tensorflow_loaded": any(m.split(".")[0] in ("tensorflow", "keras", "tf2onnx")
                                           for m in sys.modules)}))
"""


def test_bundle_captions_with_onnx_runtime_alone(exported_run):
    images = [str(image) for image in split_images(exported_run, count=3)]
    result = subprocess.run([sys.executable, "-c", ORT_ONLY, str(exported_run / "onnx"), *images], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout)
    assert output["tensorflow_loaded"] is False
    from demo.captioner import Captioner

    captioner = Captioner(exported_run / "onnx", provider="cpu")  # the top-k step; the script used the whole one
    runtime = [r.caption for r in captioner.caption(images)]
    assert not caption_differences(captioner, images, output["captions"], runtime, 1), (output["captions"], runtime)


KILL_BETWEEN_THE_RENAMES = """
import os, shutil, signal, sys
from pathlib import Path
from export import install
run = Path(sys.argv[1])
work = run / f".onnx-tmp-{os.getpid()}"  # what a real export would have built, checked and named so
shutil.copytree(run / "onnx", work, copy_function=os.link)
real_rename = os.rename
def rename(source, target):
    real_rename(source, target)
    if str(target).endswith(".previous"):
        os.kill(os.getpid(), signal.SIGKILL)  # the old bundle is aside, the new one not yet in place
os.rename = rename
install.install(work, run / "onnx")
"""


def kill_during_conversion(run: Path) -> Path:
    """Start `python -m export`; SIGKILL it once the conv part is in its work folder (reused from the run's
    conversion cache, then fc1 and fc2 are appended to it); return its work folder."""
    process = subprocess.Popen([sys.executable, "-m", "export", "--run", str(run)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    work = run / f".onnx-tmp-{process.pid}"
    deadline = time.monotonic() + 240
    while not (work / CONV_PART).is_file():
        assert process.poll() is None, "export ended before it could be interrupted"
        assert time.monotonic() < deadline, "the encoder stage did not start within 240 s"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    return work


def test_sigkill_anywhere_in_an_export_then_the_next_export_repairs_it(exported_run, tmp_path):
    """A kill mid-conversion leaves the old bundle serving; a kill between the install's two renames leaves
    no `onnx/` but `onnx.previous/`, which the loader names and the next export puts back, with the killed
    exports' work folders removed, before anything else: here an export that then cannot run (a good one
    would go on to replace the bundle, as every export in this suite does)."""
    from demo.captioner import Captioner
    from demo.manifest import BundleError, verify_bundle

    run = linked_copy(exported_run, tmp_path, without=(FEATURE_ENCODER,))  # so the export appends to the conv part
    before = (run / "onnx" / "manifest.json").read_bytes()
    converting = kill_during_conversion(run)
    assert (converting / "decoder_step.onnx").is_file() and not (converting / "manifest.json").exists(), \
        "the kill landed after the decoder and during the encoder's conversion"
    assert (run / "onnx" / "manifest.json").read_bytes() == before
    verify_bundle(run / "onnx")

    killed = subprocess.run([sys.executable, "-c", KILL_BETWEEN_THE_RENAMES, str(run)], cwd=REPO, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "onnx").exists() and (run / "onnx.previous" / "manifest.json").read_bytes() == before
    with pytest.raises(BundleError, match=r"an interrupted export left .*onnx\.previous: rename it to onnx"):
        Captioner(run / "onnx", provider="cpu")
    image = sorted((REPO / "demo" / "examples").glob("*.png"))[0]
    served = run_module("demo", "caption", "--model", str(run / "onnx"), str(image), timeout=120)
    assert served.returncode == 2 and "onnx.previous: rename it to onnx" in served.stderr, served.stderr
    assert "Traceback" not in served.stderr

    (run / "model.keras").unlink()  # the next export cannot run; it must repair first all the same
    again = run_module("export", "--run", str(run))
    assert again.returncode == 2 and "model.keras not found" in again.stderr, again.stderr
    assert "restored" in again.stderr and "from an interrupted install" in again.stderr
    assert (run / "onnx" / "manifest.json").read_bytes() == before and not (run / "onnx.previous").exists()
    verify_bundle(run / "onnx")
    assert not list(run.glob(".onnx-tmp-*")), "both killed exports' work folders are removed by the next one"


def test_export_without_a_trained_model_says_what_to_run(tmp_path):
    result = run_module("export", "--run", str(tmp_path / "empty"))
    assert result.returncode == 2 and "python -m train fit" in result.stderr
