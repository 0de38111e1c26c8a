"""The loader's checks behind the manifest's: each one made to fire on a bundle whose manifest agrees with it.

`verify_bundle` compares every file with its size and sha256 in the manifest, so a bundle damaged by
editing one file is refused there. The checks `Captioner` makes after it (the vocabulary's size, the
decoder's V and H, each graph's input and output names) guard against a manifest that is consistent
with its files and still wrong: a hand-mixed bundle, a manifest rewritten by a tool. Here every tampered
bundle is resealed (file records, graph IO, sizes rewritten to match) so that `verify_bundle` passes and
the captioner's own check is the one that speaks. Also: the app's lazy load of a second encoder variant.

Slow: the session's exported run, ONNX Runtime sessions of the real VGG16 encoder, CLI subprocesses.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import run_module, split_images

pytestmark = pytest.mark.slow


def bundle_copy(source: Path, target: Path, copied: tuple[str, ...] = ()) -> Path:
    """A bundle copy whose big encoder files are symlinks, unless named in `copied` (those are changed)."""
    target.mkdir()
    for path in source.iterdir():
        if path.name.startswith("encoder") and path.name not in copied:
            os.symlink(path, target / path.name)
        else:
            shutil.copy(path, target / path.name)
    return target


def read_manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def reseal(bundle: Path, changed: list[str], **fields) -> None:
    """Make the manifest agree with the changed files again (records; graph IO for .onnx files), plus `fields`.

    Written atomically, as the export writes it: what a consistent but wrong manifest looks like.
    """
    import onnxruntime as ort

    from demo.artifacts import atomic_write_json
    from demo.bundle_layout import MODEL_KEYS
    from demo.manifest import file_record, io_record

    manifest = read_manifest(bundle)
    for name in changed:
        manifest["files"][name] = file_record(bundle / name)
        if name.endswith(".onnx"):
            session = ort.InferenceSession(str(bundle / name), providers=["CPUExecutionProvider"])
            manifest["models"][MODEL_KEYS[name]] |= {"inputs": io_record(session.get_inputs()),
                                                     "outputs": io_record(session.get_outputs())}
    atomic_write_json(bundle / "manifest.json", manifest | fields)


def rename_graph_value(path: Path, old: str, new: str) -> None:
    """Rename a graph input or output (and every edge carrying it): a valid graph that is not this project's."""
    import onnx

    from export.graph_edit import rename_value

    model = onnx.load(str(path))
    rename_value(model, old, new)
    onnx.checker.check_model(model)
    path.unlink()  # the copy may be a symlink into the session's run: never write through it
    onnx.save(model, str(path))


def drop_split_decoder(bundle: Path) -> None:
    """A bundle listing decoder_step.onnx alone, as an export without the split would: the runtime uses it."""
    from demo.artifacts import atomic_write_json
    from demo.bundle_layout import MODEL_KEYS, SPLIT_DECODER

    manifest = read_manifest(bundle)
    for name in SPLIT_DECODER:
        (bundle / name).unlink()
        del manifest["files"][name], manifest["models"][MODEL_KEYS[name]]
    atomic_write_json(bundle / "manifest.json", manifest)


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
    return (f"{bundle / 'decoder_step_image.onnx'} has vocabulary {manifest['vocab_size']} and hidden size "
            f"{manifest['hidden_size']}; the manifest says {size} and {manifest['hidden_size']}: the files come "
            "from different exports")


def manifest_hidden_size_wrong(bundle: Path, manifest: dict, split: bool = True) -> str:
    if not split:
        drop_split_decoder(bundle)
    reseal(bundle, [], hidden_size=manifest["hidden_size"] + 1)
    step = "decoder_step_image.onnx" if split else "decoder_step.onnx"
    return (f"{bundle / step} has vocabulary {manifest['vocab_size']} and hidden size "
            f"{manifest['hidden_size']}; the manifest says {manifest['vocab_size']} and {manifest['hidden_size'] + 1}"
            ": the files come from different exports")


def graph_renamed(name: str, old: str, new: str, split: bool = True) -> Callable[[Path, dict], str]:
    def damage(bundle: Path, manifest: dict) -> str:
        from demo.bundle_layout import GRAPH_IO

        if not split:
            drop_split_decoder(bundle)
        rename_graph_value(bundle / name, old, new)
        reseal(bundle, [name])
        inputs, outputs = ([new if v == old else v for v in values] for values in GRAPH_IO[name])
        return (f"{bundle}: the {name.removesuffix('.onnx')} graph has inputs {inputs} and outputs {outputs}, "
                f"expected {GRAPH_IO[name]}: it is not from this project's export")
    return damage


CASES = {  # id: (damage returning the exact message, encoder variant loaded, encoder files copied not linked)
    "vocab-size": (vocab_of_another_run, "fp32", ()),
    "decoder-vocab-size": (manifest_and_vocab_smaller_than_the_decoder, "fp32", ()),
    "decoder-hidden-size": (manifest_hidden_size_wrong, "fp32", ()),
    "unsplit-decoder-hidden-size": (lambda bundle, manifest: manifest_hidden_size_wrong(bundle, manifest, False),
                                    "fp32", ()),
    "step-image-input": (graph_renamed("decoder_step_image.onnx", "token", "word"), "fp32", ()),
    "projection-output": (graph_renamed("image_projection.onnx", "image", "projection"), "fp32", ()),
    "unsplit-step-output": (graph_renamed("decoder_step.onnx", "log_probs", "logits", split=False), "fp32", ()),
    "int8-encoder-input": (graph_renamed("encoder.int8.onnx", "pixels", "images"), "int8", ("encoder.int8.onnx",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_captioner_check_fires_on_a_bundle_that_passes_verify_bundle(exported_run, tmp_path, case):
    from demo.captioner import Captioner
    from demo.manifest import REBUILD, BundleError, verify_bundle

    damage, variant, copied = CASES[case]
    bundle = bundle_copy(exported_run / "onnx", tmp_path / "onnx", copied)
    message = damage(bundle, read_manifest(exported_run / "onnx"))
    verify_bundle(bundle)  # the premise: the manifest's own checks pass, so they cannot be what refuses it
    with pytest.raises(BundleError, match=re.escape(message)) as info:
        Captioner(bundle, provider="cpu", variant=variant)
    assert str(info.value).endswith(REBUILD), "names the fix"
    result = run_module("demo", "caption", "--model", str(bundle), "--provider", "cpu", "--variant", variant,
                        str(split_images(exported_run)[0]), timeout=300)
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


@pytest.mark.parametrize("damage, target, message", [
    (truncate, "decoder_step.onnx", r"decoder_step.onnx has \d+ bytes, the manifest says \d+"),
    (edit_vocab, "vocab.json", r"vocab.json has \d+ bytes, the manifest says \d+"),
    (edit_manifest_hash, "manifest.json", "decoder_step.onnx does not match its sha256"),
    (Path.unlink, "decoder_step.onnx", "decoder_step.onnx is listed in the manifest but missing"),
    (Path.unlink, "manifest.json", "bundle manifest not found"),
], ids=["truncated-onnx", "vocab-edited", "hash-mismatch", "missing-file", "missing-manifest"])
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


# ---- the app's second encoder variant, loaded on its first request ----------------------------------------

SETTINGS = (3, 20, 0.5, 3)  # num_beams, max_length, length_penalty, num_return_sequences


def test_pool_loads_the_second_variant_on_first_request_and_answers_as_the_int8_captioner(exported_run):
    from demo.captioner import Captioner
    from demo.web.page import CaptionerPool, run_caption

    image = split_images(exported_run)[0]
    pool = CaptionerPool(exported_run / "onnx", provider="cpu")
    assert pool.error is None and pool.variants == ["fp32", "int8"]
    fp32 = run_caption(pool, str(image), *SETTINGS, "fp32")
    int8 = run_caption(pool, str(image), *SETTINGS, "int8")
    assert fp32["variant"] == "fp32" and int8["variant"] == "int8"
    alone = Captioner(exported_run / "onnx", provider="cpu", variant="int8").compare(image, *SETTINGS)
    assert int8["greedy"]["caption"] == alone.greedy.caption
    assert int8["greedy"]["log_prob"] == pytest.approx(alone.greedy.log_prob, abs=1e-5)
    assert [c["caption"] for c in int8["beam"]["candidates"]] == [c.caption for c in alone.beam.candidates]
    # the answer really comes from the other encoder: int8 features change the scores (measured, not assumed)
    assert abs(int8["greedy"]["log_prob"] - fp32["greedy"]["log_prob"]) > 1e-4, (int8["greedy"], fp32["greedy"])


def test_second_variant_replaced_after_start_is_refused_not_loaded(exported_run, tmp_path):
    """A same-size replacement (the size check cannot see it) of encoder.int8.onnx after the server started."""
    import gradio as gr

    from demo.manifest import BundleError
    from demo.web.page import CaptionerPool, caption_or_explain, run_caption

    bundle = bundle_copy(exported_run / "onnx", tmp_path / "onnx", copied=("encoder.int8.onnx",))
    image = str(split_images(exported_run)[0])
    pool = CaptionerPool(bundle, provider="cpu")
    assert run_caption(pool, image, *SETTINGS, "fp32")["variant"] == "fp32"
    encoder = bundle / "encoder.int8.onnx"
    data = bytearray(encoder.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one weight byte: the graph still loads and runs, with other weights
    encoder.write_bytes(bytes(data))
    wanted = f"{encoder} does not match its sha256 in the manifest"
    with pytest.raises(BundleError, match=re.escape(wanted)):
        pool.get("int8")
    with pytest.raises(gr.Error, match=re.escape(wanted)):  # what the page and the API show
        caption_or_explain(pool, image, *SETTINGS, "int8")
    assert "int8" not in pool._loaded
    assert caption_or_explain(pool, image, *SETTINGS, "fp32")["variant"] == "fp32", "fp32 still served"
