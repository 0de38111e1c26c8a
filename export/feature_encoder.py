"""The fp32 encoder graph serving runs, built before training, so ONNX Runtime can compute the feature cache.

Training and serving then see the features of one graph. The graph is the export's own encoder (the conv part
converted by tf2onnx in a child process, fc1 and fc2 appended as Gemm nodes), kept in `RUN/export_cache/encoder/`
beside the conv part (`export.conv_cache`), so the export copies it instead of building it again. Before it
computes a single row it is checked against Keras on a few of the run's images, with the export's parity
bound: a graph that does not compute VGG16's features never fills a cache.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from demo import bundle_layout as layout
from demo.artifacts import atomic_write_json, read_json, sha256_file
from demo.preprocess import load_image
from demo.sessions import create_session
from export import conv_cache
from export.config import ExportConfig
from export.errors import ParityError
from export.graph_edit import CONV_PART, append_dense_layers
from export.parity import REFERENCE_FEATURES, REFERENCE_PIXELS, REFERENCE_TIMING, encoder_parity
from export.tf_child import run_tf_child
from train.captions_file import read_captions
from train.encoder import EncoderSpec, vgg16_weights
from train.run_files import RunFiles

log = logging.getLogger(__name__)
FOLDER = "encoder"  # in RUN/export_cache/: encoder.onnx, its .data file, and the record that vouches for both
RECORD = "encoder.json"
PARITY_IMAGES = 4  # the run's first images, checked against Keras before the graph computes any feature


class OnnxFeatureEncoder:
    """`predict_on_batch` over an ONNX Runtime session: what `train.features.extract_features` calls."""

    def __init__(self, path: Path, provider: str = "auto", keras_seconds_per_image: float | None = None):
        self.session, self.provider = create_session(path, provider)
        self.engine = f"onnxruntime ({self.provider})"
        self.keras_seconds_per_image = keras_seconds_per_image  # Keras on the same images, from the parity check

    def predict_on_batch(self, pixels: np.ndarray) -> np.ndarray:
        # load_image's pixels are whole numbers in [0, 255]: uint8 holds them exactly
        batch = np.asarray(pixels).astype(np.uint8)
        return self.session.run([layout.FEATURES], {layout.PIXELS: batch})[0]

    def seconds_per_image(self, pixels: np.ndarray) -> float:
        """A second pass over `pixels` (the first one prepacks weights and warms the arena), timed."""
        self.predict_on_batch(pixels)
        started = time.perf_counter()
        self.predict_on_batch(pixels)
        return (time.perf_counter() - started) / len(pixels)


def faster_engine(files: RunFiles, encoder: OnnxFeatureEncoder) -> tuple[str, dict]:
    """'onnx' or 'keras', whichever computed the parity images faster on this machine, and both timings: which
    is faster depends on the CPU (its vector units, the libraries' kernels for them) and on a GPU."""
    captions = read_captions(files.captions)
    pixels = np.stack([load_image(captions.image_root / i) for i in captions.ids()[:PARITY_IMAGES]])
    timings = {"onnx": encoder.seconds_per_image(pixels), "keras": encoder.keras_seconds_per_image}
    if timings["keras"] is None or timings["onnx"] <= timings["keras"]:
        return "onnx", timings
    return "keras", timings


def feature_encoder(files: RunFiles, spec: EncoderSpec, provider: str = "auto",
                    opset: int = ExportConfig().opset) -> OnnxFeatureEncoder:
    """The run's fp32 encoder for `spec` as an ONNX Runtime model, built (and parity-checked) when the run has
    none for these weights yet."""
    next(vgg16_weights(spec))  # weights that cannot be had stop here, with WeightsUnavailable, before any child
    key = conv_cache.cache_key(spec, opset)
    path = cached_encoder(files.root, key)
    if path is None:
        path = _build(files, spec, key, opset)
    record = read_json(path.with_name(RECORD), "feature encoder record")
    return OnnxFeatureEncoder(path, provider, record.get("keras_seconds_per_image"))


def cached_encoder(run: Path, key: dict) -> Path | None:
    """The run's encoder.onnx built under `key`, if its record vouches for both of its files."""
    folder = run / conv_cache.CACHE_DIR / FOLDER
    record_path = folder / RECORD
    if not record_path.is_file():
        return None
    record = read_json(record_path, "feature encoder record")
    if record.get("key") != key or record.get("sha256") != _digests(folder):
        return None
    return folder / layout.DEFAULT_ENCODER


def _digests(folder: Path) -> dict | None:
    names = (layout.DEFAULT_ENCODER, layout.external_data(layout.DEFAULT_ENCODER))
    if not all((folder / name).is_file() for name in names):
        return None
    return {name: sha256_file(folder / name) for name in names}


def _build(files: RunFiles, spec: EncoderSpec, key: dict, opset: int) -> Path:
    folder = files.root / conv_cache.CACHE_DIR / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".feature-encoder-", dir=folder.parent) as tmp:
        work = Path(tmp)
        spec_args = ("--vgg-weights", str(spec.weights), "--seed", str(spec.seed))
        if not conv_cache.reuse(files.root, key, work / CONV_PART):
            log.info("features: converting VGG16's convolutional part with tf2onnx for ONNX Runtime (once per run)")
            run_tf_child("encoder-conv", files.root, work, opset, *spec_args)
            conv_cache.store(files.root, key, work / CONV_PART)
        append_dense_layers(work / CONV_PART, vgg16_weights(spec), work / layout.DEFAULT_ENCODER)
        keras_seconds = _check_against_keras(files, work, spec_args, opset)
        (folder / RECORD).unlink(missing_ok=True)  # the record goes last: files without it are never trusted
        for name in (layout.DEFAULT_ENCODER, layout.external_data(layout.DEFAULT_ENCODER)):
            shutil.move(work / name, folder / name)
    record = {"key": key, "sha256": _digests(folder), "keras_seconds_per_image": keras_seconds}
    atomic_write_json(folder / RECORD, record)
    return folder / layout.DEFAULT_ENCODER


def _check_against_keras(files: RunFiles, work: Path, spec_args: tuple[str, ...], opset: int) -> float:
    """Keras' features of the run's first images (a child process) against the graph's, by the export's own
    encoder check; returns Keras' seconds per image on them."""
    ids = read_captions(files.captions).ids()[:PARITY_IMAGES]
    run_tf_child("encoder-reference", files.root, work, opset, *spec_args, "--parity-images", *ids)
    try:
        checked = encoder_parity(work)
    except ParityError as exc:
        raise ParityError(f"{exc}, on {len(ids)} of the run's images: extract with --engine keras") from exc
    log.info("features: the ONNX encoder matches Keras on %d images (max difference %.1e of the feature scale)",
             checked["images"], checked["max_abs_diff_relative_to_feature_scale"])
    keras_seconds = float(read_json(work / REFERENCE_TIMING, "Keras timing")["keras_seconds_per_image"])
    for name in (REFERENCE_FEATURES, REFERENCE_PIXELS, REFERENCE_TIMING, CONV_PART):
        (work / name).unlink(missing_ok=True)
    return keras_seconds
