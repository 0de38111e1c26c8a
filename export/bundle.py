"""`python -m export`: build `RUN/onnx/` transactionally.

Everything is written to a work folder, checked (onnx.checker, parity with
Keras, the manifest's own hashes), and only then moved into place by
`export.install`. The model card (`README.md`, `export.model_card`) is written just
before the manifest, from the same figures, and the manifest lists it.

The TensorFlow work runs in child processes (`export.tf_side`), one at a
time; this process never imports TensorFlow, so memory peaks do not stack.
"""
from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from demo import bundle_layout as layout
from demo.artifacts import atomic_write_json
from demo.errors import MissingFile
from demo.manifest import FORMAT, FORMAT_VERSION, file_record, io_record, verify_bundle
from demo.preprocess import IMAGE_SIZE, PREPROCESS_VERSION
from demo.vocab import Vocabulary
from export import conv_cache
from export.config import ExportConfig
from export.decoder_int8 import build_int8_decoder
from export.feature_encoder import cached_encoder
from export.graph_edit import CONV_PART, append_dense_layers, split_decoder
from export.install import install, new_work_dir, remove_stale_work_dirs, restore_interrupted_install
from export.int8 import build_int8_encoder
from export.model_card import write_model_card
from export.parity import (
    REFERENCE_TEST_FEATURES,
    REFERENCE_TOP,
    caption_parity,
    cpu_session,
    decoder_parity,
    encoder_parity,
    read_top,
    top_weight_stream,
    topk_parity,
)
from export.tf_child import run_tf_child
from export.tool_versions import tool_versions
from train.captions_file import RunCaptions, read_captions
from train.encoder import EncoderSpec, vgg16_weights
from train.feature_cache import cache_paths
from train.run_features import run_encoder_spec, trained_layer
from train.run_files import RunFiles
from train.scene_scoring import load_scenes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quantizer:
    """What `--quantize NAME` builds from the fp32 graphs, each part writing its file into the work folder and
    returning its figures for the manifest's `parity` (or leaving the file out when it misses its gate)."""

    decoder: Callable[..., dict] | None  # (work, vocab, test features, references)
    encoder: Callable[..., dict] | None  # (work, vocab, calibration images, evaluation images, references, scenes)


QUANTIZERS = {"int8": Quantizer(decoder=build_int8_decoder, encoder=build_int8_encoder)}
if set(QUANTIZERS) != set(layout.QUANTIZED):  # a variant in the table that nothing builds, or the reverse
    raise ImportError(f"export.bundle.QUANTIZERS has {sorted(QUANTIZERS)}, demo.bundle_layout's quantized "
                      f"variants are {sorted(layout.QUANTIZED)}")


def run_export(cfg: ExportConfig) -> dict:
    files = RunFiles(Path(cfg.run))
    bundle = files.bundle
    restore_interrupted_install(bundle)  # first: an export that cannot run still repairs what a killed one left
    remove_stale_work_dirs(files.root)
    _require(files)
    work = new_work_dir(files.root)
    started = time.perf_counter()
    try:
        manifest = _build(cfg, files, work)
        manifest["export_seconds"] = round(time.perf_counter() - started, 1)
        write_model_card(files, manifest, work / layout.MODEL_CARD)  # before the file records: the manifest lists it
        manifest = _with_file_records(manifest, work)
        atomic_write_json(work / layout.MANIFEST, manifest)
        verify_bundle(work)
        install(work, bundle)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("export: bundle ready in %s (%s s)", bundle, manifest["export_seconds"])
    return manifest


def _require(files: RunFiles) -> None:
    layer = trained_layer(files)
    for path, fix in ((files.model, "python -m train fit"), (files.vocab, "python -m train prepare"),
                      (cache_paths(files, layer)["meta"], f"python -m train features --layer {layer}")):
        if not path.is_file():
            raise MissingFile(f"{path} not found: run `{fix} --run {files.root}` first")


def _build(cfg: ExportConfig, files: RunFiles, work: Path) -> dict:
    """The decoder first: its conversion and checks take seconds, the encoder's a minute or more, so a
    decoder that does not match Keras fails the export before the long part."""
    vocab = Vocabulary.load(files.vocab)
    captions = read_captions(files.captions)
    by_split = {s: captions.ids(s) for s in ("train", "val", "test")}
    peaks, parity = {}, {}
    peaks["decoder"] = _stage("converting the decoder step and decoding the test split in Keras", _child, "decoder",
                              files, work, cfg)
    _stage(f"splitting the decoder after the image projection, top-{cfg.top_k} step", split_decoder,
           work / layout.DECODER_STEP, work / layout.IMAGE_PROJECTION, work / layout.DEFAULT_DECODER,
           vocab.end_id, cfg.top_k)
    decoder_files = [layout.DECODER_STEP, layout.IMAGE_PROJECTION, layout.DEFAULT_DECODER]
    _stage("running onnx.checker on the decoder", _check_models, work, decoder_files)
    test_features = np.load(work / REFERENCE_TEST_FEATURES, allow_pickle=False)  # fc2, or a fine-tuned top's
    parity["decoder"] = _stage("checking decoder parity", decoder_parity, work)
    parity["decoder_topk"] = _stage("checking the top-k decoder step", topk_parity, work, vocab.end_id)
    parity["captions"] = _stage("checking greedy and beam-3 captions", caption_parity, work, test_features, vocab)
    quantizer = QUANTIZERS.get(cfg.quantize)  # None: --quantize none
    evaluated = by_split["test"][: cfg.int8_eval_images]
    if quantizer and quantizer.decoder:
        parity[layout.get_variant(cfg.quantize).parity_key("decoder")] = _stage(
            f"quantizing the decoder step to {cfg.quantize} and comparing its captions", quantizer.decoder, work,
            vocab, test_features[: cfg.int8_eval_images], _references(captions, evaluated))
    if cfg.decoder_only:
        spec = None
    else:
        spec = _build_encoder(cfg, files, work, peaks, by_split)
        parity["encoder"] = _stage("checking encoder parity", encoder_parity, work)
    if quantizer and quantizer.encoder and not cfg.decoder_only:
        parity[layout.get_variant(cfg.quantize).parity_key("encoder")] = _stage(
            f"quantizing the encoder to {cfg.quantize} and comparing it", quantizer.encoder, work, vocab,
            [captions.image_root / i for i in by_split["train"][: cfg.calibration_images]],
            [captions.image_root / i for i in evaluated], _references(captions, evaluated),
            load_scenes(captions, evaluated))
    fine_tuned_top = (work / REFERENCE_TOP).is_file()
    for leftover in work.glob("reference_*"):
        leftover.unlink()
    shutil.copyfile(files.vocab, work / layout.VOCAB)
    return _manifest(cfg, files, work, vocab, spec, parity, peaks) | {"encoder_fine_tuned_top": fine_tuned_top,
                                                                      layout.PADDED_ROWS: not cfg.decoder_only}


def _build_encoder(cfg: ExportConfig, files: RunFiles, work: Path, peaks: dict,
                   by_split: dict[str, list[str]]) -> EncoderSpec:
    """encoder.onnx (conv part by tf2onnx, fc1/fc2 appended) and Keras' reference features to check it by."""
    parity_ids = (by_split["train"] + by_split["val"] + by_split["test"])[: cfg.parity_images]
    spec = run_encoder_spec(files)
    key = conv_cache.cache_key(spec, cfg.opset)
    fine_tuned = (work / REFERENCE_TOP).is_file()
    built = None if fine_tuned else cached_encoder(files.root, key)
    if built is not None:  # the graph `--engine onnx` computed the features with: checked below like a new one
        log.info("export: reusing the encoder the feature cache was computed with (%s)", built.parent)
        for name in (layout.DEFAULT_ENCODER, layout.external_data(layout.DEFAULT_ENCODER)):
            shutil.copyfile(built.parent / name, work / name)
    elif conv_cache.reuse(files.root, key, work / CONV_PART):
        log.info("export: reusing VGG16's convolutional part converted for these weights (%s)",
                 files.root / conv_cache.CACHE_DIR)
    else:
        peaks["encoder_conv"] = _stage("converting VGG16's convolutional part with tf2onnx", _child,
                                       "encoder-conv", files, work, cfg)
        conv_cache.store(files.root, key, work / CONV_PART)
    if built is None:
        weights = top_weight_stream(read_top(work / REFERENCE_TOP)) if fine_tuned else vgg16_weights(spec)
        _stage(f"appending {'the fine-tuned ' if fine_tuned else ''}fc1 and fc2 as Gemm nodes", append_dense_layers,
               work / CONV_PART, weights, work / layout.DEFAULT_ENCODER)
        (work / CONV_PART).unlink()
    _stage("running onnx.checker on the encoder", _check_models, work, [layout.DEFAULT_ENCODER])
    peaks["encoder_reference"] = _stage("computing Keras reference features", _child, "encoder-reference", files,
                                        work, cfg, "--parity-images", *parity_ids)
    return spec


def _references(captions: RunCaptions, image_ids: list[str]) -> list[list[list[str]]]:
    by_id = {entry.id: entry for entry in captions.images}
    return [by_id[image_id].references() for image_id in image_ids]


def _stage(title: str, function, *args):
    started = time.perf_counter()
    log.info("export: %s ...", title)
    result = function(*args)
    log.info("export:   done in %.1f s", time.perf_counter() - started)
    return result


def _child(part: str, files: RunFiles, work: Path, cfg: ExportConfig, *extra: str) -> float:
    return run_tf_child(part, files.root, work, cfg.opset, *extra)


def _check_models(work: Path, names: list[str]) -> None:
    for name in names:
        onnx.checker.check_model(str(work / name), full_check=True)


def _manifest(cfg: ExportConfig, files: RunFiles, work: Path, vocab: Vocabulary, spec: EncoderSpec | None,
              parity: dict,
              peaks: dict) -> dict:
    models = {}
    for name, key in layout.MODEL_KEYS.items():
        if (work / name).is_file():
            session = cpu_session(work / name)
            models[key] = {"file": name, "inputs": io_record(session.get_inputs()),
                           "outputs": io_record(session.get_outputs())}
    hidden = next(i for i in models["decoder_step"]["inputs"] if i["name"] == layout.H)["shape"][-1]
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source_run": str(files.root.resolve()),
        "opset": cfg.opset,
        "vocab_size": len(vocab),
        "hidden_size": hidden,
        "max_length": vocab.max_length,
        "image_size": IMAGE_SIZE,
        "preprocess": PREPROCESS_VERSION,
        "encoder_weights": spec.describe() if spec else None,
        "top_k": cfg.top_k,
        "models": models,
        "parity": parity,
        "export_peak_rss_gib": peaks,
        "tools": tool_versions(),
    }


def _with_file_records(manifest: dict, work: Path) -> dict:
    """The manifest with `files` (after `models`): every file of the work folder but the manifest, taken last so
    that the model card, written from the rest of the manifest, is listed and checked like every file."""
    records = {p.name: file_record(p) for p in sorted(work.iterdir()) if p.name != layout.MANIFEST}
    keys = list(manifest)
    at = keys.index("models") + 1
    return {k: manifest[k] for k in keys[:at]} | {"files": records} | {k: manifest[k] for k in keys[at:]}
