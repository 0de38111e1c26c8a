"""The export's configuration, and its command-line form (`python -m export --help`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from demo.bundle_layout import DECODER_TOPK_FILES, DEFAULT_RUN, ENCODER_FILES, QUANTIZED
from demo.generation import DEFAULTS
from train.config import option


@dataclass
class ExportConfig:
    run: Path = option(DEFAULT_RUN, "run folder with model.keras and its feature cache")
    quantize: str = option("none", "also write a quantized variant's graphs (int8: "
                           f"{ENCODER_FILES['int8']}, static QDQ calibrated on training images, and "
                           f"{DECODER_TOPK_FILES['int8']}, dynamic), each shipped only if it passes its check",
                           choices=("none", *QUANTIZED))
    top_k: int = option(DEFAULTS.top_k, "words per row the decoder step returns; beam search of width k needs "
                        "2k, so the default covers the app's widest beam")
    decoder_only: bool = option(False, "export the decoder only (no VGG16 encoder): for runs whose features "
                                "are not VGG16's, e.g. the benchmark's Flickr-scale stand-in; the bundle "
                                "then captions features, not images")
    opset: int = option(17, "ONNX opset")
    parity_images: int = option(16, "images on which encoder features are compared with Keras")
    calibration_images: int = option(32, "training images that calibrate the int8 activation ranges")
    int8_eval_images: int = option(200, "test images on which int8 captions and BLEU are compared with fp32")
