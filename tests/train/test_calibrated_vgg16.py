"""`--vgg-weights calibrated`: the parts checked on small arrays, the whole encoder on the shared build.

The shared build (`make demo`, offline) extracts its features with the calibrated VGG16 and exports it: the
export reads the same weights file the features were made with and its encoder parity check passes, which is
the "same weights in every process" proof. Here: what each part computes, the refusals, and what the
calibration is for, that the features name the shapes.
"""
import json
import shutil

import h5py
import numpy as np
import pytest

from demo.errors import BadInput, DamagedFile, MissingFile
from tests.helpers import run_module
from train.calibrated_vgg16 import (
    CALIBRATED,
    REGIONS,
    WEIGHTS_FILE,
    conv_filters,
    encoder_spec,
    pyramid_kernel,
    top_eigenpairs,
)
from train.captions_file import read_captions
from train.run_files import RunFiles
from train.scene_scoring import load_scenes


def correlated_patches(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)).astype(np.float32) * np.geomspace(3, 0.1, dim).astype(np.float32)
    return rng.standard_normal((count, dim)).astype(np.float32) @ mixing + 5.0


def test_filters_are_whitened_components_with_both_signs_and_half_their_responses_positive():
    patches = correlated_patches(6000, 9 * 4)
    kernel, bias = conv_filters(patches, filters=16, epsilon=1e-2, rng=np.random.default_rng(0))
    assert kernel.shape == (3, 3, 4, 16) and bias.shape == (16,)
    weights = kernel.reshape(36, 16)
    np.testing.assert_allclose(weights[:, :8], -weights[:, 8:], rtol=1e-6)  # +u and -u: ReLU keeps both halves
    responses = patches @ weights + bias
    np.testing.assert_allclose(responses.std(axis=0), 1.0, rtol=1e-3)
    np.testing.assert_allclose((responses > 0).mean(axis=0), 0.5, atol=0.01)
    top = weights[:, :8]
    decorrelated = np.corrcoef((patches @ top).T)  # whitened components: uncorrelated responses
    np.testing.assert_allclose(decorrelated, np.eye(8), atol=0.05)


def test_fewer_components_than_filters_are_filled_with_random_whitened_directions():
    """block1_conv1's patches have 27 dimensions for 64 filters."""
    kernel, bias = conv_filters(correlated_patches(4000, 27), filters=64, epsilon=1e-2, rng=np.random.default_rng(0))
    weights = kernel.reshape(27, 64)
    np.testing.assert_allclose(weights[:, :27], -weights[:, 27:54], rtol=1e-6)
    assert np.linalg.matrix_rank(weights[:, 54:]) == 10 and np.isfinite(bias).all()


def test_the_subspace_iteration_finds_the_top_eigenpairs():
    """On a power-law spectrum like image patches': the top components' variances, and their subspace."""
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.standard_normal((1536, 1536)))
    spectrum = 100.0 / np.arange(1, 1537) ** 1.2
    covariance = ((basis * spectrum) @ basis.T).astype(np.float32)
    values, vectors = top_eigenpairs(covariance, 64, rng)
    np.testing.assert_allclose(values, spectrum[:64], rtol=1e-2)
    captured = np.trace(vectors.T @ covariance @ vectors)
    assert captured > 0.999 * spectrum[:64].sum()


def test_the_pyramid_keeps_where_a_channel_fires():
    """fc1 unit r * 512 + c is channel c's mean over region r of the 7x7 block5_pool map."""
    kernel = pyramid_kernel(512)
    assert kernel.shape == (7 * 7 * 512, 4096)
    pool = np.zeros((7, 7, 512), np.float32)
    pool[3, 0, 5] = 1.0  # channel 5 fires at the middle of the left edge only
    units = (pool.reshape(-1) @ kernel).reshape(len(REGIONS), 512)
    by_region = dict(zip(REGIONS, units[:, 5]))
    assert by_region["whole"] == pytest.approx(1 / 49) and by_region["left"] == pytest.approx(1 / 28)
    assert by_region["middle_row"] == pytest.approx(1 / 21)
    assert by_region["right"] == by_region["centre"] == by_region["middle_column"] == 0.0
    assert np.count_nonzero(np.delete(units, 5, axis=1)) == 0


def write_settings_only(path, settings: dict) -> None:
    with h5py.File(path, "w") as handle:
        handle.attrs["calibration"] = json.dumps(settings)


def test_a_damaged_or_missing_weights_file_and_another_seed_are_refused_with_the_fix(tmp_path):
    files = RunFiles(tmp_path)
    with pytest.raises(MissingFile, match="--vgg-weights calibrated --overwrite"):
        encoder_spec(files, CALIBRATED, 0)  # what export asks: the file the features were made with
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x89HDF\r\n not really")
    with pytest.raises(DamagedFile, match=f"{WEIGHTS_FILE} is damaged.*delete it"):
        encoder_spec(files, CALIBRATED, 0, calibrate=True)
    write_settings_only(tmp_path / WEIGHTS_FILE, {"seed": 1})
    with pytest.raises(BadInput, match="calibrated with --seed 1, not 0"):
        encoder_spec(files, CALIBRATED, 0, calibrate=True)
    assert encoder_spec(files, CALIBRATED, 1, calibrate=True).weights == str(tmp_path / WEIGHTS_FILE)


PROBE_IMAGES = 240  # of the build's 600: four standard errors there are about a third of the gap measured


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5, ridge: float = 1.0) -> float:
    """Held-out accuracy of a ridge-regression probe (one-hot targets), by k-fold over the images."""
    features = features.astype(np.float64)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    classes = np.unique(labels)
    targets = (labels[:, None] == classes[None, :]).astype(np.float64)
    order = np.random.default_rng(0).permutation(len(labels))
    right = 0
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        x = features[train]
        gram = x @ x.T + ridge * len(train) * np.eye(len(train))  # the dual: fewer images than features
        weights = x.T @ np.linalg.solve(gram, targets[train])
        right += int(np.sum(classes[np.argmax(features[fold] @ weights, axis=1)] == labels[fold]))
    return right / len(labels)


@pytest.mark.slow
def test_calibrated_features_name_the_first_shape_far_better_than_random_ones(exported_run, tmp_path):
    """The point of calibrating: a linear probe reads the first shape's name from the build's calibrated fc2
    features far more often than from He-normal ones (`--vgg-weights none`) of the same scenes. The bound is
    the probe's own sampling error on these scenes: the gap must exceed four standard errors. The first
    PROBE_IMAGES scenes of the build are enough for that bound and spare a VGG16 pass over the rest."""
    config = json.loads((exported_run / "config.json").read_text())
    assert config["features"]["vgg_weights"] == CALIBRATED  # the offline default build
    random_run = tmp_path / "random"
    random_run.mkdir()
    for name in ("splits.json", "vocab.json", "config.json"):
        shutil.copy2(exported_run / name, random_run / name)
    listed = json.loads((exported_run / "captions.json").read_text())
    listed["images"] = listed["images"][:PROBE_IMAGES]  # file order is the caches' row order
    (random_run / "captions.json").write_text(json.dumps(listed))
    result = run_module("train", "features", "--run", str(random_run), "--vgg-weights", "none", "--overwrite",
                        timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    captions = read_captions(random_run / "captions.json")
    labels = np.array([scene.shapes[0].shape for scene in load_scenes(captions, captions.ids()).scenes])
    assert len(labels) == PROBE_IMAGES
    accuracy = {name: probe_accuracy(np.load(run / "features" / "fc2.npy", allow_pickle=False)[:PROBE_IMAGES],
                                     labels)
                for name, run in (("calibrated", exported_run), ("random", random_run))}
    error = np.sqrt(sum(a * (1 - a) for a in accuracy.values()) / len(labels))
    assert accuracy["calibrated"] - accuracy["random"] > 4 * error, accuracy
