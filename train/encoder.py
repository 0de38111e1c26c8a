"""VGG16 truncated at `fc2`, with Keras' "caffe" preprocessing inside the model.

The model takes the RGB uint8-range pixels that `demo.preprocess.load_image`
returns (as float32) and does RGB->BGR and ImageNet mean subtraction itself,
so the exported ONNX encoder and the feature cache see identical inputs.

Weights are never chosen silently: 'imagenet' downloads (or reuses Keras'
cached copy), a path loads a local file, 'none' is a seeded He-normal init
drawn with numpy, so the same seed gives the same encoder in every process
(feature extraction, a resumed extraction, export) without storing 0.5 GB.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demo.artifacts import sha256_file
from demo.preprocess import IMAGE_SIZE
from train.tf_import import import_keras

FEATURE_DIM = 4096
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


class WeightsUnavailable(RuntimeError):
    """ImageNet weights could not be had; the message names the two offline options."""


@dataclass(frozen=True)
class EncoderSpec:
    weights: str = "imagenet"  # 'imagenet' | 'none' | a path to an .h5 file
    seed: int = 0

    def describe(self) -> str:
        """A string that identifies the weights, stored in the feature cache's meta."""
        if self.weights == "imagenet":
            return "imagenet"
        if self.weights == "none":
            return f"random-he-normal:seed={self.seed}"
        path = Path(self.weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"--vgg-weights {self.weights}: no such file. Pass 'imagenet', 'none' or a path to "
                "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
            )
        return f"file:{path.name}:sha256={sha256_file(path)}"


def build_encoder(spec: EncoderSpec):
    """Return a Keras model: (B, 224, 224, 3) float32 RGB in [0, 255] -> (B, 4096) fc2 features."""
    keras = import_keras()

    vgg = _vgg16(spec)
    pixels = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name="pixels")
    bgr = keras.ops.flip(pixels, axis=-1) - keras.ops.convert_to_tensor(IMAGENET_BGR_MEAN, "float32")
    features = keras.Model(vgg.inputs, vgg.get_layer("fc2").output, name="vgg16_fc2")(bgr)
    return keras.Model(pixels, features, name="encoder")


def _vgg16(spec: EncoderSpec):
    keras = import_keras()

    if spec.weights == "none":
        vgg = keras.applications.VGG16(weights=None, include_top=True)
        _he_normal_init(vgg, spec.seed)
        return vgg
    if spec.weights == "imagenet":
        try:
            return keras.applications.VGG16(weights="imagenet", include_top=True)
        except Exception as exc:  # Keras raises a bare Exception on a failed download
            raise WeightsUnavailable(
                f"could not get the ImageNet VGG16 weights ({exc}). Offline, either pass "
                "--vgg-weights PATH to a local vgg16_weights_tf_dim_ordering_tf_kernels.h5, or "
                "--vgg-weights none for a random-init encoder (suits the synthetic dataset only)."
            ) from exc
    spec.describe()  # raises a clear error for a missing file
    try:
        return keras.applications.VGG16(weights=os.fspath(spec.weights), include_top=True)
    except (OSError, ValueError) as exc:
        raise WeightsUnavailable(f"cannot load VGG16 weights from {spec.weights}: {exc}") from exc


def _he_normal_init(model, seed: int) -> None:
    """He-normal kernels and zero biases: keeps activations alive through 15 ReLU layers."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        kernel, bias = weights
        fan_in = int(np.prod(kernel.shape[:-1]))
        kernel = rng.standard_normal(kernel.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        layer.set_weights([kernel, np.zeros_like(bias)])
