"""`--vgg-weights calibrated`: VGG16 weights computed from the run's own training images, without ImageNet and
without backpropagation, written once into the run as an ordinary VGG16 weights file.

Offline there are no ImageNet weights, and a random VGG16 throws the form of things away. This fits each conv
layer, from the input up, to the patches it sees: the top principal components of its 3x3 input patches,
whitened, with both signs (so ReLU keeps both halves of each), each scaled to unit response and biased at its
median response so that about half the activations pass. fc1 is a fixed spatial pyramid (each unit averages one
block5_pool channel over one region of the 7x7 map, so the features keep where things are, which captions name)
and fc2 the identity. The result is a plain Keras .h5 weights file (`--vgg-weights PATH` reads the same format),
identified by its sha256 in the feature cache and the manifest like any weights file.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from demo.artifacts import atomic_output
from demo.errors import BadInput, DamagedFile, MissingFile
from demo.preprocess import load_image
from train.captions_file import read_captions
from train.encoder import FEATURE_DIM, IMAGENET_BGR_MEAN, EncoderSpec, vgg16_layers
from train.run_files import RunFiles
from train.tf_import import import_keras

log = logging.getLogger(__name__)

CALIBRATED = "calibrated"  # the --vgg-weights value
WEIGHTS_FILE = "vgg16_calibrated.h5"
GRID = 7  # block5_pool is 7x7
# fc1's regions of the 7x7 map, as (rows, columns): 8 regions x 512 channels = fc1's 4,096 units.
REGIONS = {
    "whole": (slice(0, 7), slice(0, 7)), "left": (slice(0, 7), slice(0, 4)), "right": (slice(0, 7), slice(3, 7)),
    "top": (slice(0, 4), slice(0, 7)), "bottom": (slice(3, 7), slice(0, 7)), "centre": (slice(2, 5), slice(2, 5)),
    "middle_row": (slice(2, 5), slice(0, 7)), "middle_column": (slice(0, 7), slice(2, 5)),
}


@dataclass(frozen=True)
class Calibration:
    images: int = 96  # calibration images from the training split
    patches: int = 12_000  # 3x3 input patches sampled per conv layer
    epsilon: float = 1e-2  # whitening floor, as a share of the mean eigenvalue: keeps weak components from noise
    chunk: int = 8  # images per forward pass while propagating
    seed: int = 0


def encoder_spec(files: RunFiles, weights: str, seed: int, calibrate: bool = False) -> EncoderSpec:
    """The encoder that `--vgg-weights` names for this run: 'calibrated' is the run's own weights file (computed
    now if `calibrate`, else it must be there), anything else as `EncoderSpec` reads it."""
    if weights != CALIBRATED:
        return EncoderSpec(weights, seed)
    path = calibrated_weights(files, Calibration(seed=seed)) if calibrate else files.root / WEIGHTS_FILE
    if not path.is_file():
        raise MissingFile(f"{path} is missing: the run's features were made with --vgg-weights calibrated, whose "
                          "weights live there; run `python -m train features --vgg-weights calibrated --overwrite` "
                          "to calibrate again")
    return EncoderSpec(str(path), seed)


def calibrated_weights(files: RunFiles, cfg: Calibration) -> Path:
    """The run's calibrated weights file, computed now (under a lock, so shards started together compute it
    once) when it is not there yet."""
    path = files.root / WEIGHTS_FILE
    with _file_lock(files.root / f".{WEIGHTS_FILE}.lock"):
        if not path.is_file():
            started = time.perf_counter()
            pixels = calibration_images(files, cfg)
            log.info(f"features: calibrating VGG16 on {len(pixels)} training images (no ImageNet weights): {path}")
            write_weights(path, calibrate(pixels, cfg), settings=asdict(cfg))
            log.info(f"features: calibrated VGG16 from {len(pixels)} training images in "
                     f"{time.perf_counter() - started:.0f} s")
    found = calibration_settings(path)
    if found.get("seed") != cfg.seed:
        raise BadInput(f"{path} was calibrated with --seed {found.get('seed')}, not {cfg.seed}: pass that seed, or "
                       f"delete the file (and rebuild the features with --overwrite) to calibrate with {cfg.seed}")
    return path


def calibration_settings(path: Path) -> dict:
    """The settings a calibrated weights file was made with (empty for any other weights file)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return json.loads(handle.attrs.get("calibration", "{}"))
    except (OSError, ValueError) as exc:  # h5py: truncated or not HDF5; json: a damaged record
        raise DamagedFile(f"{path} is damaged ({exc}); delete it and run `python -m train features --vgg-weights "
                          "calibrated --overwrite` to calibrate again") from exc


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)  # a POSIX record lock: honoured over NFS, dropped if the process dies
        yield
    finally:
        os.close(fd)


def calibration_images(files: RunFiles, cfg: Calibration) -> np.ndarray:
    """A seeded sample of the training split: (N, 224, 224, 3) float32 RGB, as the encoder takes images."""
    captions = read_captions(files.captions)
    ids = captions.ids("train") or captions.ids()
    rng = np.random.default_rng(cfg.seed)
    chosen = sorted(rng.choice(len(ids), size=min(cfg.images, len(ids)), replace=False))
    return np.stack([load_image(captions.image_root / ids[i]) for i in chosen]).astype(np.float32)


def calibrate(pixels: np.ndarray, cfg: Calibration) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(layer, kernel, bias) for every VGG16 layer in model order: conv layers fitted to `pixels` (N, 224, 224,
    3 RGB), then the fixed dense layers."""
    import_keras()  # TensorFlow's start-up notices kept out of the user's output
    import tensorflow as tf  # lazy: only the propagation needs it

    rng = np.random.default_rng(cfg.seed)
    activations = pixels[..., ::-1] - np.asarray(IMAGENET_BGR_MEAN, np.float32)  # what block1_conv1 sees
    conv_layers = [(name, shape) for name, kind, shape in vgg16_layers() if kind == "conv"]
    for position, (name, shape) in enumerate(tqdm(conv_layers, desc="calibrating VGG16", unit="layer")):
        kernel, bias = conv_filters(sample_patches(activations, cfg.patches, rng), shape[-1], cfg.epsilon, rng)
        yield name, kernel, bias
        last_of_block = position + 1 == len(conv_layers) or conv_layers[position + 1][0][:6] != name[:6]
        activations = _propagate(tf, activations, kernel, bias, pool=last_of_block, chunk=cfg.chunk)
    yield "fc1", pyramid_kernel(activations.shape[-1]), np.zeros(FEATURE_DIM, np.float32)
    yield "fc2", np.eye(FEATURE_DIM, dtype=np.float32), np.zeros(FEATURE_DIM, np.float32)
    yield "predictions", np.zeros((FEATURE_DIM, 1000), np.float32), np.zeros(1000, np.float32)


def sample_patches(activations: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` 3x3 patches (zero-padded at the borders, as 'same' convolution pads), flattened in the kernel's
    (row, column, channel) order."""
    n, height, width, channels = activations.shape
    images, rows, cols = rng.integers(n, size=count), rng.integers(height, size=count), rng.integers(width, size=count)
    patches = np.zeros((count, 9 * channels), np.float32)
    for dy in range(3):
        for dx in range(3):
            y, x = rows + dy - 1, cols + dx - 1
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            offset = (dy * 3 + dx) * channels
            patches[inside, offset:offset + channels] = activations[images[inside], y[inside], x[inside]]
    return patches


def conv_filters(patches: np.ndarray, filters: int, epsilon: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Kernel (3, 3, C, filters) and bias: whitened top components with both signs, random whitened directions
    where the patches have fewer components than half the filters; unit response variance, median bias."""
    centred = patches - patches.mean(axis=0)
    covariance = (centred.T @ centred) / len(patches)
    dim = covariance.shape[0]
    wanted = min(filters // 2, dim)
    values, vectors = top_eigenpairs(covariance, wanted if 2 * wanted == filters else dim, rng)
    floor = epsilon * float(np.trace(covariance)) / dim
    whitening = vectors / np.sqrt(np.maximum(values, 0.0) + floor)
    top = whitening[:, :wanted]
    columns = [top, -top]
    if 2 * wanted < filters:  # block1_conv1: 27 components for 64 filters
        columns.append(whitening @ rng.standard_normal((whitening.shape[1], filters - 2 * wanted), np.float32))
    weights = np.concatenate(columns, axis=1).astype(np.float32)
    responses = patches @ weights
    weights /= responses.std(axis=0) + 1e-12
    bias = -np.median(patches @ weights, axis=0)
    return weights.reshape(3, 3, -1, filters), bias.astype(np.float32)


def top_eigenpairs(covariance: np.ndarray, k: int, rng: np.random.Generator,
                   iterations: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The `k` largest eigenvalues (descending) and their eigenvectors of a symmetric matrix.

    A full `eigh` of the block4/5 covariances (4,608 square) takes tens of seconds on two cores; a subspace
    iteration on k + 64 vectors finds the top few hundred in a second, accurately enough to whiten with."""
    dim = covariance.shape[0]
    if 3 * k >= dim or dim <= 1024:
        values, vectors = np.linalg.eigh(covariance)
        return values[::-1][:k], vectors[:, ::-1][:, :k]
    basis = rng.standard_normal((dim, k + 64)).astype(np.float32)
    for _ in range(iterations):
        basis, _ = np.linalg.qr(covariance @ basis)
    values, small = np.linalg.eigh(basis.T @ covariance @ basis)
    order = np.argsort(values)[::-1][:k]
    return values[order], (basis @ small)[:, order]


def _propagate(tf, activations: np.ndarray, kernel: np.ndarray, bias: np.ndarray, pool: bool,
               chunk: int) -> np.ndarray:
    """The layer's ReLU output (2x2 max-pooled after a block's last conv) for every image, a chunk at a time."""
    n, height, width, _ = activations.shape
    scale = 2 if pool else 1
    out = np.empty((n, height // scale, width // scale, kernel.shape[-1]), np.float32)
    kernel_t, bias_t = tf.constant(kernel), tf.constant(bias)
    for start in range(0, n, chunk):
        x = tf.nn.relu(tf.nn.conv2d(activations[start:start + chunk], kernel_t, 1, "SAME") + bias_t)
        if pool:
            x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        out[start:start + chunk] = x.numpy()
    return out


def pyramid_kernel(channels: int) -> np.ndarray:
    """fc1 as region averages of flattened block5_pool ((row * 7 + column) * channels + channel): unit
    r * channels + c is channel c's mean over region r."""
    kernel = np.zeros((GRID * GRID, channels, len(REGIONS), channels), np.float32)
    cells = np.arange(GRID * GRID).reshape(GRID, GRID)
    diagonal = np.arange(channels)
    for r, (rows, cols) in enumerate(REGIONS.values()):
        region = cells[rows, cols].ravel()
        kernel[region[:, None], diagonal, r, diagonal] = 1.0 / len(region)
    return kernel.reshape(GRID * GRID * channels, len(REGIONS) * channels)


def write_weights(path: Path, layers: Iterator[tuple[str, np.ndarray, np.ndarray]], settings: dict) -> None:
    """A Keras legacy .h5 weights file (the ImageNet file's format: `load_weights` and `--vgg-weights PATH`
    read it), written atomically; compressed, since fc1 and the unused `predictions` are mostly zeros."""
    import h5py

    with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
        names = []
        for name, kernel, bias in layers:
            group = handle.create_group(name)
            weight_names = [f"{name}/kernel:0", f"{name}/bias:0"]
            for weight_name, array in zip(weight_names, (kernel, bias)):
                group.create_dataset(weight_name, data=array, compression="gzip", compression_opts=1)
            group.attrs["weight_names"] = np.array(weight_names, dtype="S")
            names.append(name)
        handle.attrs["layer_names"] = np.array(names, dtype="S")
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = version("keras").encode()
        handle.attrs["calibration"] = json.dumps(settings)
