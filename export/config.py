"""The export's configuration, and its command-line form (`python -m export --help`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from train.config import option


@dataclass
class ExportConfig:
    run: Path = option(Path("models/default"), "run folder with model.keras and its feature cache")
    quantize: str = option("none", "also write encoder.int8.onnx (static QDQ, calibrated on training images)",
                         choices=("none", "int8"))
    opset: int = option(17, "ONNX opset")
    parity_images: int = option(16, "images on which encoder features are compared with Keras")
    calibration_images: int = option(32, "training images that calibrate the int8 activation ranges")
    int8_eval_images: int = option(200, "test images on which int8 captions and BLEU are compared with fp32")
