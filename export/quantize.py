"""int8 encoder: static quantization in QDQ format, calibrated on the run's training images.

Per-channel int8 weights and uint8 activations (MinMax calibration): on an
AVX-512 VNNI CPU ONNX Runtime runs the QDQ convolutions and Gemms as integer
kernels, several times faster than fp32, and the file is a quarter the size.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from demo.bundle_layout import PIXELS
from demo.preprocess import load_image
from export.graph_edit import save_with_external_data


class _ImageReader:
    """Feeds calibration images one at a time, as `pixels` (1, 224, 224, 3) uint8."""

    def __init__(self, paths: list[Path]):
        self._paths = iter(paths)

    def get_next(self):
        path = next(self._paths, None)
        return None if path is None else {PIXELS: load_image(path)[None]}


class _DropPreprocessingAdvice(logging.Filter):
    """ONNX Runtime's quantizer logs "Please consider to run pre-processing before quantization" (with a link)
    on the root logger for every model. Its pre-processing is symbolic shape inference and graph fusion for
    transformer-like models; the encoder's shapes are static and its convolutions already fused (the decoder
    step has no transformer either), so the advice does not apply here, and it would land in the middle of our
    stage lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def without_preprocessing_advice():
    """ONNX Runtime's quantizers, minus their advice to pre-process (see `_DropPreprocessingAdvice`)."""
    root, advice = logging.getLogger(), _DropPreprocessingAdvice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def quantize_encoder(fp32_path: Path, int8_path: Path, calibration_paths: list[Path]) -> None:
    """int8_path (+ its external data) from fp32_path."""
    reader_class = type("ImageReader", (_ImageReader, CalibrationDataReader), {})
    with without_preprocessing_advice():
        _quantize(fp32_path, int8_path, reader_class(calibration_paths))
    save_with_external_data(onnx.load_model(int8_path), int8_path)


def _quantize(fp32_path: Path, int8_path: Path, reader) -> None:
    quantize_static(
        model_input=str(fp32_path),
        model_output=str(int8_path),
        calibration_data_reader=reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two feature matrices."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)
