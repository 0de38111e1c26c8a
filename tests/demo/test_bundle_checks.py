"""The loader's checks behind the manifest's: each one made to fire on a bundle whose manifest agrees with it.

`verify_bundle` compares every file with its size and sha256 in the manifest, so a bundle damaged by
editing one file is refused there. The checks `Captioner` makes after it (the vocabulary's size, the
decoder's V and H, each graph's input and output names) guard against a manifest that is consistent
with its files and still wrong: a hand-mixed bundle, a manifest rewritten by a tool. Here every tampered
bundle is resealed (file records, graph IO, sizes rewritten to match) so that `verify_bundle` passes and
the captioner's own check is the one that speaks. Also: the app's lazy load of other encoder and decoder
variants, and the int8 decoder asked of a bundle the export left it out of.

Slow: the session's exported run, ONNX Runtime sessions of the real VGG16 encoder, CLI subprocesses.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from demo.generation import GenerationConfig
from tests.helpers import (
    assert_same_answer,
    bundle_copy,
    read_manifest,
    reseal,
    run_module,
    split_images,
    without_int8_decoder,
)

pytestmark = pytest.mark.slow


def rename_graph_value(path: Path, old: str, new: str) -> None:
    """Rename a graph input or output (and every edge carrying it): a valid graph that is not this project's."""
    import onnx

    from export.graph_edit import rename_value

    model = onnx.load(str(path))
    rename_value(model, old, new)
    onnx.checker.check_model(model)
    path.unlink()  # the copy may be a symlink into the session's run: never write through it
    onnx.save(model, str(path))


def one_token_fewer(bundle: Path) -> int:
    """Drop the vocabulary's last token (its own size field kept consistent); returns the new size."""
    vocab = json.loads((bundle / "vocab.json").read_text())
    vocab["tokens"] = vocab["tokens"][:-1]
    vocab["size"] = len(vocab["tokens"])
    (bundle / "vocab.json").write_text(json.dumps(vocab))
    return vocab["size"]


def vocab_of_another_run(bundle: Path, manifest: dict) -> str:
    one_token_fewer(bundle)
    reseal(bundle, ["vocab.json"])  # vocab_size still says the decoder's V
    return (f"{bundle / 'vocab.json'} has {manifest['vocab_size'] - 1} tokens but the manifest says "
            f"{manifest['vocab_size']}: the vocabulary and the model come from different runs")


def manifest_and_vocab_smaller_than_the_decoder(bundle: Path, manifest: dict) -> str:
    size = one_token_fewer(bundle)
    reseal(bundle, ["vocab.json"], vocab_size=size)  # vocabulary and manifest agree; the decoder does not
    return (f"{bundle / 'decoder_step_topk.onnx'} has vocabulary {manifest['vocab_size']} and hidden size "
            f"{manifest['hidden_size']}; the manifest says {size} and {manifest['hidden_size']}: the files come "
            "from different exports")


def manifest_hidden_size_wrong(bundle: Path, manifest: dict, decoder_variant: str = "fp32") -> str:
    from demo.bundle_layout import decoder_file

    reseal(bundle, [], hidden_size=manifest["hidden_size"] + 1)
    return (f"{bundle / decoder_file(decoder_variant)} has vocabulary {manifest['vocab_size']} and hidden size "
            f"{manifest['hidden_size']}; the manifest says {manifest['vocab_size']} and {manifest['hidden_size'] + 1}"
            ": the files come from different exports")


def graph_renamed(name: str, old: str, new: str) -> Callable[[Path, dict], str]:
    def damage(bundle: Path, manifest: dict) -> str:
        from demo.bundle_layout import GRAPH_IO

        rename_graph_value(bundle / name, old, new)
        reseal(bundle, [name])
        inputs, outputs = ([new if v == old else v for v in values] for values in GRAPH_IO[name])
        return (f"{bundle}: the {name.removesuffix('.onnx')} graph has inputs {inputs} and outputs {outputs}, "
                f"expected {GRAPH_IO[name]}: it is not from this project's export")
    return damage


def without_the_topk_step(bundle: Path, manifest: dict) -> str:
    """A bundle whose manifest lists decoder_step.onnx but no top-k step: the runtime never falls back to the
    whole step (the export's reference), it names what is missing."""
    from demo.artifacts import atomic_write_json
    from demo.bundle_layout import DECODER_TOPK_FILES, MODEL_KEYS

    edited = read_manifest(bundle)
    for name in DECODER_TOPK_FILES.values():
        (bundle / name).unlink()
        del edited["files"][name], edited["models"][MODEL_KEYS[name]]
    atomic_write_json(bundle / "manifest.json", edited)
    return f"{bundle} has no fp32 decoder (it has: none)"


CASES = {  # id: (damage returning the exact message, encoder variant, decoder variant, encoder files copied)
    "vocab-size": (vocab_of_another_run, "fp32", "fp32", ()),
    "decoder-vocab-size": (manifest_and_vocab_smaller_than_the_decoder, "fp32", "fp32", ()),
    "decoder-hidden-size": (manifest_hidden_size_wrong, "fp32", "fp32", ()),
    "int8-decoder-hidden-size": (lambda bundle, manifest: manifest_hidden_size_wrong(bundle, manifest, "int8"),
                                 "fp32", "int8", ()),
    "topk-step-input": (graph_renamed("decoder_step_topk.onnx", "token", "word"), "fp32", "fp32", ()),
    "topk-step-output": (graph_renamed("decoder_step_topk.onnx", "top_ids", "ids"), "fp32", "fp32", ()),
    "int8-topk-step-input": (graph_renamed("decoder_step_topk.int8.onnx", "rows", "beams"), "fp32", "int8", ()),
    "projection-output": (graph_renamed("image_projection.onnx", "image", "projection"), "fp32", "fp32", ()),
    "no-topk-step": (without_the_topk_step, "fp32", "fp32", ()),
    "int8-encoder-input": (graph_renamed("encoder.int8.onnx", "pixels", "images"), "int8", "fp32",
                           ("encoder.int8.onnx",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_captioner_check_fires_on_a_bundle_that_passes_verify_bundle(exported_run, int8_decoder_run, tmp_path,
                                                                          case):
    """On the bundle with both decoder variants (tests/conftest.py), so the int8 step's checks are reached too."""
    from demo.captioner import Captioner
    from demo.manifest import REBUILD, BundleError, verify_bundle

    damage, variant, decoder_variant, copied = CASES[case]
    source = int8_decoder_run / "onnx"
    bundle = bundle_copy(source, tmp_path / "onnx", copied)
    message = damage(bundle, read_manifest(source))
    verify_bundle(bundle)  # the premise: the manifest's own checks pass, so they cannot be what refuses it
    with pytest.raises(BundleError, match=re.escape(message)) as info:
        Captioner(bundle, provider="cpu", variant=variant, decoder_variant=decoder_variant)
    assert str(info.value).endswith(REBUILD), "names the fix"
    result = run_module("demo", "caption", "--model", str(bundle), "--provider", "cpu", "--variant", variant,
                        "--decoder-variant", decoder_variant, str(split_images(exported_run)[0]),
                        timeout=300)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.strip() == f"error: {info.value}" and "Traceback" not in result.stderr, result.stderr


# ---- a file changed under the manifest: verify_bundle's own checks ----------------------------------------

def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def edit_vocab(path: Path) -> None:
    one_token_fewer(path.parent)


def edit_manifest_hash(path: Path) -> None:
    manifest = json.loads(path.read_text())
    manifest["files"]["decoder_step.onnx"]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))


def format_version_1(path: Path) -> None:
    """A bundle from before the top-k step (decoder_step_image.onnx): its manifest says version 1."""
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(manifest | {"version": 1}))


@pytest.mark.parametrize("damage, target, message", [
    (truncate, "decoder_step.onnx", r"decoder_step.onnx has \d+ bytes, the manifest says \d+"),
    (edit_vocab, "vocab.json", r"vocab.json has \d+ bytes, the manifest says \d+"),
    (edit_manifest_hash, "manifest.json", "decoder_step.onnx does not match its sha256"),
    (Path.unlink, "decoder_step.onnx", "decoder_step.onnx is listed in the manifest but missing"),
    (Path.unlink, "manifest.json", "bundle manifest not found"),
    (format_version_1, "manifest.json", "manifest.json has version 1, this code reads version 2; re-run `python -m "
                                        "export --run RUN`"),
], ids=["truncated-onnx", "vocab-edited", "hash-mismatch", "missing-file", "missing-manifest", "format-version-1"])
def test_damaged_bundles_are_refused_naming_the_file(exported_run, tmp_path, damage, target, message):
    from demo.captioner import Captioner
    from demo.manifest import BundleError

    bundle = bundle_copy(exported_run / "onnx", tmp_path / "onnx")
    damage(bundle / target)
    with pytest.raises(BundleError, match=message) as info:
        Captioner(bundle)
    assert "python -m export" in str(info.value)
    result = run_module("demo", "caption", "--model", str(bundle), str(split_images(exported_run)[0]), timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == f"error: {info.value}", result.stderr


# ---- the app's other variants, loaded on their first request ---------------------------------------------

SETTINGS = GenerationConfig(num_beams=3, max_length=20, num_return_sequences=3)


def test_pool_loads_the_second_variant_on_first_request_and_answers_as_the_int8_captioner(exported_run):
    from demo.captioner import Captioner
    from demo.captioner_pool import CaptionerPool, run_caption

    image = split_images(exported_run)[0]
    pool = CaptionerPool(exported_run / "onnx", provider="cpu")
    assert pool.error is None and pool.variants == ["fp32", "int8"]
    fp32 = run_caption(pool, str(image), SETTINGS, "fp32")
    int8 = run_caption(pool, str(image), SETTINGS, "int8")
    assert fp32["variant"] == "fp32" and int8["variant"] == "int8"
    alone = Captioner(exported_run / "onnx", provider="cpu", variant="int8").compare(image, SETTINGS)
    assert_same_answer(int8, alone)
    # the answer really comes from the other encoder: int8 features change the scores (measured, not assumed)
    assert abs(int8["greedy"]["log_prob"] - fp32["greedy"]["log_prob"]) > 1e-4, (int8["greedy"], fp32["greedy"])


def test_second_variant_replaced_after_start_is_refused_not_loaded(exported_run, tmp_path):
    """A same-size replacement (the size check cannot see it) of encoder.int8.onnx after the server started."""
    import gradio as gr

    from demo.captioner_pool import CaptionerPool, run_caption
    from demo.manifest import BundleError
    from demo.web.page import caption_or_explain

    bundle = bundle_copy(exported_run / "onnx", tmp_path / "onnx", copied=("encoder.int8.onnx",))
    image = str(split_images(exported_run)[0])
    pool = CaptionerPool(bundle, provider="cpu")
    assert run_caption(pool, image, SETTINGS, "fp32")["variant"] == "fp32"
    encoder = bundle / "encoder.int8.onnx"
    data = bytearray(encoder.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one weight byte: the graph still loads and runs, with other weights
    encoder.write_bytes(bytes(data))
    wanted = f"{encoder} does not match its sha256 in the manifest"
    with pytest.raises(BundleError, match=re.escape(wanted)):
        pool.get("int8")
    with pytest.raises(gr.Error, match=re.escape(wanted)):  # what the page and the API show
        caption_or_explain(pool, image, SETTINGS.to_dict(), "int8", "fp32")
    assert ("int8", "fp32") not in pool._loaded
    assert caption_or_explain(pool, image, SETTINGS.to_dict(), "fp32", "fp32")["variant"] == "fp32", "fp32 still served"


def test_pool_serves_the_int8_decoder_as_its_captioner_does(int8_decoder_run, exported_run):
    from demo.captioner import Captioner
    from demo.captioner_pool import CaptionerPool, run_caption

    image = str(split_images(exported_run)[0])
    pool = CaptionerPool(int8_decoder_run / "onnx", provider="cpu")
    assert pool.error is None and pool.decoder_variants == ["fp32", "int8"] and pool.default_pair() == ("fp32", "fp32")
    fp32 = run_caption(pool, image, SETTINGS, "fp32")  # the decoder variant left out, as older callers do
    int8 = run_caption(pool, image, SETTINGS, "fp32", "int8")
    assert (fp32["variant"], fp32["decoder_variant"]) == ("fp32", "fp32")
    assert (int8["variant"], int8["decoder_variant"]) == ("fp32", "int8")
    alone = Captioner(int8_decoder_run / "onnx", provider="cpu", decoder_variant="int8").compare(image, SETTINGS)
    assert_same_answer(int8, alone)
    # the int8 step really ran: its matrices change the scores (measured, not assumed)
    assert int8["greedy"]["log_prob"] != fp32["greedy"]["log_prob"], (int8["greedy"], fp32["greedy"])


def test_decoder_variant_replaced_after_start_is_refused_and_other_pairs_still_load(int8_decoder_run, exported_run,
                                                                                     tmp_path):
    """A lazily loaded pair re-hashes the files it opens, and only those: a damaged int8 decoder step refuses
    (fp32, int8) and leaves (int8, fp32) loading."""
    from demo.captioner_pool import CaptionerPool, run_caption
    from demo.manifest import BundleError

    bundle = bundle_copy(int8_decoder_run / "onnx", tmp_path / "onnx")  # decoder files copied, encoders linked
    image = str(split_images(exported_run)[0])
    pool = CaptionerPool(bundle, provider="cpu")
    step = bundle / "decoder_step_topk.int8.onnx"
    data = bytearray(step.read_bytes())
    data[len(data) // 2] ^= 0xFF
    step.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=re.escape(f"{step} does not match its sha256 in the manifest")):
        pool.get("fp32", "int8")
    assert ("fp32", "int8") not in pool._loaded
    answer = run_caption(pool, image, SETTINGS, "int8", "fp32")
    assert (answer["variant"], answer["decoder_variant"]) == ("int8", "fp32")


def test_int8_decoder_asked_of_a_bundle_without_it_names_the_manifests_reason(exported_run, tmp_path):
    from demo.captioner import Captioner
    from demo.manifest import BundleError

    bundle, why = without_int8_decoder(exported_run / "onnx", tmp_path / "onnx")
    with pytest.raises(BundleError, match=re.escape(why)) as info:
        Captioner(bundle, provider="cpu", decoder_variant="int8")
    assert "has no int8 decoder (it has: fp32)" in str(info.value)
    result = run_module("demo", "caption", "--model", str(bundle), "--provider", "cpu", "--decoder-variant", "int8",
                        str(split_images(exported_run)[0]), timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == f"error: {info.value}", result.stderr
