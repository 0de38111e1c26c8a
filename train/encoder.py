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

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demo.artifacts import sha256_file
from demo.bundle_layout import PIXELS
from demo.errors import CaptionerError, MissingFile
from demo.preprocess import IMAGE_SIZE
from train.tf_import import import_keras

FEATURE_DIM = 4096
POOL_DIM = 7 * 7 * 512  # block5_pool, flattened: fc1's input
FEATURE_LAYERS = {"fc2": FEATURE_DIM, "block5_pool": POOL_DIM}
TOP_LAYERS = ("fc1", "fc2")  # the dense layers `fit --fine-tune-top` trains
TopWeights = dict  # {"fc1": (kernel, bias), "fc2": (kernel, bias)} as float32 arrays
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
# Set by the test suite (tests/fast_suite_guard.py) while a test not marked slow runs; inherited by subprocesses.
FORBID_VGG16_ENV = "CAPTIONER_FORBID_VGG16"


class WeightsUnavailable(CaptionerError, RuntimeError):
    """ImageNet weights could not be had; the message names the two offline options."""


@dataclass(frozen=True)
class EncoderSpec:
    weights: str = "imagenet"  # 'imagenet' | 'none' | a path to an .h5 file ('calibrated' resolves to one)
    seed: int = 0

    def describe(self) -> str:
        """A string that identifies the weights, stored in the feature cache's meta."""
        if self.weights == "imagenet":
            return "imagenet"
        if self.weights == "none":
            return f"random-he-normal:seed={self.seed}"
        path = Path(self.weights)
        if not path.is_file():
            raise MissingFile(
                f"--vgg-weights {self.weights}: no such file. Pass 'imagenet', 'none' or a path to "
                "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
            )
        return f"file:{path.name}:sha256={sha256_file(path)}"


IMAGENET_WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                        "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
IMAGENET_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
IMAGENET_WEIGHTS_MD5 = "64373286793e3c8b2b4e3219cbf3544b"  # as keras.applications.vgg16 checks it
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def build_encoder(spec: EncoderSpec, layer: str = "fc2", top: TopWeights | None = None):
    """Return a Keras model: (B, 224, 224, 3) float32 RGB in [0, 255] -> (B, D) features of `layer`.

    `layer` is 'fc2' (D 4096) or 'block5_pool' (flattened, D 25088: what `fit --fine-tune-top` trains fc1 and
    fc2 on). `top` replaces fc1's and fc2's weights by fine-tuned ones (the export's reference encoder).
    """
    keras = import_keras()
    if layer not in FEATURE_LAYERS:
        raise ValueError(f"unknown feature layer {layer!r}; one of {', '.join(FEATURE_LAYERS)}")
    if layer == "fc2":
        vgg = load_vgg16(spec)
        for name, (kernel, bias) in (top or {}).items():
            vgg.get_layer(name).set_weights([kernel, bias])
        body = keras.Model(vgg.inputs, vgg.get_layer("fc2").output, name="vgg16_fc2")
    else:
        body = load_conv_part(spec)
    pixels = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name=PIXELS)
    bgr = keras.ops.flip(pixels, axis=-1) - keras.ops.convert_to_tensor(IMAGENET_BGR_MEAN, "float32")
    return keras.Model(pixels, body(bgr), name="encoder")


def apply_top(pool: np.ndarray, top: TopWeights, chunk: int = 256) -> np.ndarray:
    """fc2 features from flattened block5_pool ones through fc1 and fc2 (ReLU each), in numpy, a chunk at a time."""
    out = np.empty((len(pool), FEATURE_DIM), dtype=np.float32)
    for start in range(0, len(pool), chunk):
        x = np.asarray(pool[start:start + chunk], dtype=np.float32)
        for name in TOP_LAYERS:
            kernel, bias = top[name]
            x = np.maximum(x @ kernel + bias, 0.0)
        out[start:start + chunk] = x
    return out


def load_conv_part(spec: EncoderSpec):
    """VGG16 up to the flattened `block5_pool`, with the conv weights of `spec` (the dense ones never loaded)."""
    conv = vgg16_architecture(top=False)
    for name, kernel, bias in vgg16_weights(spec):
        if not name.startswith("block"):
            break
        conv.get_layer(name).set_weights([kernel, bias])
    return conv


def dense_top_weights(spec: EncoderSpec) -> TopWeights:
    """fc1's and fc2's (kernel, bias) under `spec`: where `fit --fine-tune-top` starts from."""
    top = {}
    for name, kernel, bias in vgg16_weights(spec):
        if name in TOP_LAYERS:
            top[name] = (kernel, bias)
        if name == TOP_LAYERS[-1]:
            break
    return top


def vgg16_layers() -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, kind, kernel shape) of every weighted layer of VGG16 with its top, in model order."""
    layers, channels = [], 3
    for block, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            layers.append((f"block{block}_conv{conv}", "conv", (3, 3, channels, filters)))
            channels = filters
    flat = (IMAGE_SIZE // 32) ** 2 * channels
    return layers + [("fc1", "dense", (flat, FEATURE_DIM)), ("fc2", "dense", (FEATURE_DIM, FEATURE_DIM)),
                     ("predictions", "dense", (FEATURE_DIM, 1000))]


def vgg16_architecture(top: bool = True):
    """keras.applications.VGG16(include_top=True), layer for layer, but zero-initialised.

    Same names, order and shapes, so the same weight files load into it; the
    zero init only allocates, where Keras' own Glorot init of 138M parameters
    peaks at several GB before the real weights overwrite it. `top=False`
    stops after `flatten` (the export converts only that part through TF).
    """
    forbidden_in = os.environ.get(FORBID_VGG16_ENV)
    if forbidden_in:
        raise RuntimeError(f"VGG16 is built in {forbidden_in}: the test suite keeps VGG16 out of tests not marked "
                           f"slow ({FORBID_VGG16_ENV} is set by tests/fast_suite_guard.py)")
    keras = import_keras()
    layers = keras.layers
    x = inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="input_layer")
    for block, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            x = layers.Conv2D(filters, (3, 3), activation="relu", padding="same", kernel_initializer="zeros",
                              name=f"block{block}_conv{conv}")(x)
        x = layers.MaxPooling2D((2, 2), strides=(2, 2), name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    if top:
        x = layers.Dense(FEATURE_DIM, activation="relu", kernel_initializer="zeros", name="fc1")(x)
        x = layers.Dense(FEATURE_DIM, activation="relu", kernel_initializer="zeros", name="fc2")(x)
        x = layers.Dense(1000, activation="softmax", kernel_initializer="zeros", name="predictions")(x)
    return keras.Model(inputs, x, name="vgg16" if top else "vgg16_conv")


def vgg16_weights(spec: EncoderSpec) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(layer name, kernel, bias) in model order, one layer in memory at a time."""
    if spec.weights == "none":
        yield from _he_normal_weights(spec.seed)
        return
    path = _imagenet_weights_file() if spec.weights == "imagenet" else os.fspath(spec.weights)
    spec.describe()
    yield from _h5_weights(path)


def _h5_weights(path: str) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Read a Keras legacy .h5 weights file (the ImageNet file's format) the way Keras' loader does."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            for name, _, _ in vgg16_layers():
                group = handle[name]
                kernel, bias = (np.asarray(group[w]) for w in _h5_name_list(group, "weight_names"))
                yield name, kernel, bias
    except (OSError, KeyError, ValueError) as exc:
        raise WeightsUnavailable(f"cannot read VGG16 weights from {path}: {exc}") from exc


def _h5_name_list(group, attribute: str) -> list[str]:
    """Keras splits long name lists over `weight_names0`, `weight_names1`, ... attributes."""
    if attribute in group.attrs:
        values = list(group.attrs[attribute])
    else:
        values, chunk = [], 0
        while f"{attribute}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{attribute}{chunk}"])
            chunk += 1
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def load_vgg16(spec: EncoderSpec):
    """VGG16 with the weights `spec` names; never a silent substitute. The weights are found first, so a failed
    download or a missing file stops before the model is built."""
    if spec.weights == "none":
        vgg = vgg16_architecture()
        _he_normal_init(vgg, spec.seed)
        return vgg
    if spec.weights == "imagenet":
        path = _imagenet_weights_file()
    else:
        spec.describe()  # raises a clear error for a missing file
        path = os.fspath(spec.weights)
    vgg = vgg16_architecture()
    try:
        vgg.load_weights(path)
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsUnavailable(f"cannot load VGG16 weights from {path}: {exc}") from exc
    return vgg


def _imagenet_weights_file() -> str:
    """Keras' cached copy if there is one (found without importing TensorFlow), else a download."""
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    for folder in (keras_home, Path("/tmp/.keras")):  # Keras falls back to /tmp when home is read-only
        cached = folder / "models" / IMAGENET_WEIGHTS_FILE
        if cached.is_file():
            return os.fspath(cached)
    keras = import_keras()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints "Downloading data from ..."; stdout is for output
            return keras.utils.get_file(IMAGENET_WEIGHTS_FILE, IMAGENET_WEIGHTS_URL, cache_subdir="models",
                                        file_hash=IMAGENET_WEIGHTS_MD5)
    except Exception as exc:  # Keras raises a bare Exception on a failed download
        raise WeightsUnavailable(
            f"could not get the ImageNet VGG16 weights ({exc}). Offline, pass "
            "--vgg-weights PATH to a local vgg16_weights_tf_dim_ordering_tf_kernels.h5, "
            "--vgg-weights calibrated for weights computed from the run's own training images (no ImageNet: it "
            "sees the synthetic scenes well, photos far less well than ImageNet's), or "
            "--vgg-weights none for a seeded random init (colours and positions, hardly shapes)."
        ) from exc


def _he_normal_weights(seed: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """He-normal kernels and zero biases: keeps activations alive through 15 ReLU layers.

    Drawn layer by layer in model order from one numpy stream, so any consumer
    (the full model for features, the conv part plus dense weights for export)
    gets identical weights from the seed.
    """
    rng = np.random.default_rng(seed)
    for name, _, shape in vgg16_layers():
        kernel = rng.standard_normal(shape, dtype=np.float32)
        kernel *= np.float32(np.sqrt(2.0 / int(np.prod(shape[:-1]))))
        yield name, kernel, np.zeros(shape[-1], dtype=np.float32)


def _he_normal_init(model, seed: int) -> None:
    for name, kernel, bias in _he_normal_weights(seed):
        layer = model.get_layer(name)
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
        del kernel
