"""`features --layer block5_pool` and `fit --fine-tune-top`, through the CLI, on a 100-scene run.

Slow: about 100 VGG16 forward passes (the shared build's calibrated encoder), three short fits of a model with
VGG16's 120M-parameter top and one export (which reuses the shared build's
conversion of the same conv stack).
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from demo.errors import BadInput
from tests.helpers import run_module
from train.calibrated_vgg16 import CALIBRATED, WEIGHTS_FILE

pytestmark = [pytest.mark.slow, pytest.mark.heavy]
# the 90 training images with their 5 captions each in one step: an epoch is one update of VGG16's 120M-parameter
# top (the Adam step over it, not the images, is what each step costs)
FIT = ("--batch-size", "450", "--patience", "100", "--lr-patience", "100")
MIRRORED = ("--strategy", "mirrored", "--logical-cpus", "2")


@pytest.fixture(scope="module")
def pool_run(demo_build, tmp_path_factory) -> Path:
    """100 scenes with a block5_pool cache of the shared build's calibrated VGG16 (its weights file copied in, so
    the same encoder), and the build's conversion of that same conv stack (`export_cache/`, keyed by the
    weights): its export converts only what fine-tuning changed."""
    run = tmp_path_factory.mktemp("fine-tune") / "run"
    result = run_module("train", "prepare", "--dataset", "synthetic", "--num-images", "100", "--run", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    shutil.copy2(demo_build.run / WEIGHTS_FILE, run / WEIGHTS_FILE)
    result = run_module("train", "features", "--run", str(run), "--vgg-weights", CALIBRATED, "--layer", "block5_pool")
    assert result.returncode == 0, result.stderr[-3000:]
    shutil.copytree(demo_build.run / "export_cache", run / "export_cache")
    return run


def copy_of(run: Path, target: Path) -> Path:
    """`run` less its images, in hard links: fit and export write new files and rename them, never into these."""
    shutil.copytree(run, target, copy_function=os.link, ignore=shutil.ignore_patterns("synthetic"))
    return target


def fit(run: Path, *args: str):
    result = run_module("train", "fit", "--run", str(run), "--fine-tune-top", *FIT, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def top_of(run: Path) -> dict:
    from train.model import fine_tuned_top, load_trained

    return fine_tuned_top(load_trained(run / "model.keras"))


def initial_top(run: Path) -> dict:
    from train.calibrated_vgg16 import encoder_spec
    from train.encoder import dense_top_weights
    from train.run_files import RunFiles

    return dense_top_weights(encoder_spec(RunFiles(run), CALIBRATED, 0))


def val_losses(run: Path) -> list[float]:
    lines = (run / "logs" / "training.csv").read_text().splitlines()
    column = lines[0].split(",").index("val_loss")
    return [float(line.split(",")[column]) for line in lines[1:]]


def test_the_block5_pool_cache_is_its_own_and_never_read_as_an_fc2_cache(pool_run, tmp_path):
    from demo.errors import MissingFile
    from train.feature_cache import CacheMismatch, cache_paths, load_cache
    from train.run_files import RunFiles

    files = RunFiles(pool_run)
    meta = json.loads(cache_paths(files, "block5_pool")["meta"].read_text())
    assert (meta["model"], meta["feature_dim"], meta["complete"]) == ("vgg16-block5_pool", 25088, True)
    cache = load_cache(files, layer="block5_pool")
    assert cache.features.shape == (100, 7 * 7 * 512) and cache.features.dtype == np.float16
    with pytest.raises(MissingFile, match="--layer fc2"):
        load_cache(files)  # fit without --fine-tune-top names the command that makes what it needs
    disguised = RunFiles(copy_of(pool_run, tmp_path / "disguised"))
    for key, path in cache_paths(disguised, "block5_pool").items():
        cache_paths(disguised)[key].unlink(missing_ok=True)  # a hard link would carry the copy into pool_run
        shutil.copy(path, cache_paths(disguised)[key])
    with pytest.raises(CacheMismatch, match="feature_dim"):
        load_cache(disguised)
    refused = run_module("train", "fit", "--run", str(pool_run), "--epochs", "1")
    assert refused.returncode != 0 and "--layer fc2" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.timeout(900)
def test_fine_tuning_starts_from_the_encoder_resumes_and_exports_the_tuned_layers(pool_run, demo_build, tmp_path):
    # Under the mirrored strategy (the suite's one run of it; 5 validation images make an uneven last batch), a
    # run stopped after epoch 1 and resumed ends where a straight 2-epoch run ends.
    straight, resumed = copy_of(pool_run, tmp_path / "straight"), copy_of(pool_run, tmp_path / "resumed")
    fit(straight, "--epochs", "2", *MIRRORED)
    first = fit(resumed, "--epochs", "1", *MIRRORED)
    assert "MirroredStrategy over 2 replicas" in first.stderr
    # fc1/fc2 start from the weights the cache was made with: Adam's first update moves each weight by at most
    # about the learning rate (1e-4), and each that has a gradient by about that much
    start, moved = initial_top(pool_run), top_of(resumed)
    for name, (kernel, bias) in moved.items():
        step = max(float(np.abs(kernel - start[name][0]).max()), float(np.abs(bias - start[name][1]).max()))
        assert 5e-5 < step < 2e-4, f"{name} moved {step} from the encoder's weights in one update"
    again = fit(resumed, "--epochs", "2", "--resume", *MIRRORED)
    assert "resuming after epoch 1" in again.stderr
    assert val_losses(resumed) == pytest.approx(val_losses(straight), abs=1e-5) and len(val_losses(resumed)) == 2

    # a second stage starts from a frozen-feature model, never from one that already tuned its top (checked in
    # this process: fit refuses before loading anything, and BadInput's exit 2 is proven by the CLI's own tests)
    from train.fit import check_first_stage

    with pytest.raises(BadInput, match="already fine-tuned"):
        check_first_stage(straight / "model.keras")
    check_first_stage(demo_build.run / "model.keras")  # the build's frozen-feature model is a first stage

    # the export reads the fine-tuned layers: its Keras captions come from block5_pool through them (evaluate's
    # own `trained_features`), and the exported encoder's features are block5_pool through them
    exported = run_module("export", "--run", str(straight))
    assert exported.returncode == 0, exported.stdout[-2000:] + exported.stderr[-3000:]
    assert "reusing VGG16's convolutional part" in exported.stderr, "the same seed-0 conv stack as the build's"
    manifest = json.loads((straight / "onnx" / "manifest.json").read_text())
    assert manifest["encoder_fine_tuned_top"] is True
    assert manifest["parity"]["encoder"]["max_abs_diff_relative_to_feature_scale"] <= 1e-4
    assert_exported_encoder_applies(straight, top_of(straight), start)
    assert_page_captions_with_it(straight)


def assert_page_captions_with_it(run: Path) -> None:
    """The app serves the fine-tuned bundle as any other: the page's request handler loads it and answers the
    runtime's captions (the page itself, in a browser, is tests/demo/test_app.py's)."""
    from demo.captioner import Captioner
    from demo.captioner_pool import CaptionerPool, run_caption
    from demo.generation import GenerationConfig
    from demo.web.page import example_images

    image, config = Path(example_images()[0]), GenerationConfig(num_beams=3, max_length=20, num_return_sequences=3)
    alone = Captioner(run / "onnx", provider="cpu").compare(image, config).to_dict()
    answer = run_caption(CaptionerPool(run / "onnx", provider="cpu"), image, config, "fp32")
    for search in ("greedy", "beam"):
        assert answer[search]["caption"] == alone[search]["caption"], (answer, alone)


def assert_exported_encoder_applies(run: Path, tuned: dict, start: dict) -> None:
    import onnxruntime as ort

    from demo.preprocess import load_image
    from train.captions_file import read_captions
    from train.encoder import apply_top
    from train.feature_cache import load_cache
    from train.run_files import RunFiles

    captions = read_captions(run / "captions.json")
    image_id = captions.ids("test")[0]
    session = ort.InferenceSession(str(run / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": load_image(captions.image_root / image_id)[None].astype(np.uint8)})[0]
    pool = load_cache(RunFiles(run), layer="block5_pool").lookup([image_id])
    want, untuned = apply_top(pool, tuned), apply_top(pool, start)
    scale = float(np.abs(want).max())
    assert float(np.abs(got - want).max()) <= 1e-2 * scale  # the cache is float16: 1e-3 relative per element
    assert float(np.abs(untuned - want).max()) > 10 * float(np.abs(got - want).max()), "tuned top not exported"
