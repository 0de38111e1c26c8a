"""The feature cache computed by ONNX Runtime (`make demo`'s default engine) on the encoder graph the bundle serves.

Slow: each test runs a Keras VGG16 in a child process for the parity check. A run of the shared build's first 24
images, with its calibrated weights and its converted conv part (hard links: no tf2onnx here), keeps the rest
short; the shared build itself proves the whole path (its `make demo` extracts with ONNX Runtime and exports
the same encoder).
"""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from export import conv_cache
from export.config import ExportConfig
from export.errors import ParityError
from export.feature_encoder import FOLDER, cached_encoder, faster_engine, feature_encoder
from train.calibrated_vgg16 import WEIGHTS_FILE, encoder_spec
from train.config import FeaturesConfig
from train.encoder import EncoderSpec
from train.feature_cache import load_cache
from train.features import extract_features
from train.run_files import RunFiles

pytestmark = pytest.mark.slow
IMAGES = 24


@pytest.fixture
def small_run(exported_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("splits.json", "vocab.json", WEIGHTS_FILE):
        os.link(exported_run / name, run / name)
    shutil.copytree(exported_run / conv_cache.CACHE_DIR, run / conv_cache.CACHE_DIR, copy_function=os.link,
                    ignore=shutil.ignore_patterns(FOLDER))
    captions = json.loads((exported_run / "captions.json").read_text())
    (run / "captions.json").write_text(json.dumps(captions | {"images": captions["images"][:IMAGES]}))
    config = json.loads((exported_run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({"prepare": config["prepare"]}))
    return run


def test_onnx_runtime_fills_the_cache_with_keras_features_and_keeps_its_graph_for_the_export(small_run,
                                                                                            exported_run):
    files = RunFiles(small_run)
    spec = encoder_spec(files, "calibrated", 0)
    encoder = feature_encoder(files, spec, provider="cpu")
    cache = extract_features(FeaturesConfig(run=small_run, vgg_weights="calibrated"), encoder=encoder)
    assert cache.meta["engines"] == ["onnxruntime (cpu)"] and cache.meta["weights"] == spec.describe()
    ids = list(cache.rows)
    reference = load_cache(RunFiles(exported_run)).lookup(ids)  # the shared build's rows for the same images
    # both are float16 rows of features that agree to 1e-4 of their scale in float32: one float16 step apart
    assert np.abs(cache.lookup(ids) - reference).max() <= 1e-3 * np.abs(reference).max()
    key = conv_cache.cache_key(spec, ExportConfig().opset)
    kept = cached_encoder(small_run, key)
    assert kept is not None
    stamp = kept.with_name(kept.name + ".data").stat().st_mtime_ns
    again = feature_encoder(files, spec, provider="cpu")
    assert kept.with_name(kept.name + ".data").stat().st_mtime_ns == stamp, "a kept graph is reused, not rebuilt"
    engine, timings = faster_engine(files, again)  # make demo's default: the faster of the two, timed here
    assert set(timings) == {"onnx", "keras"} and min(timings.values()) > 0
    assert engine == min(timings, key=timings.get)
    with open(kept.with_name(kept.name + ".data"), "r+b") as data:
        data.seek(1000)
        data.write(b"damaged")
    assert cached_encoder(small_run, key) is None, "a changed weight file is never trusted again"


def test_a_graph_that_does_not_compute_keras_features_is_refused_before_any_row(small_run):
    """The converted conv part of the calibrated weights, planted under the seeded random weights' key: the graph
    then differs from Keras' VGG16 for those weights."""
    opset = ExportConfig().opset
    calibrated = encoder_spec(RunFiles(small_run), "calibrated", 0)
    planted = small_run / "planted.onnx"
    assert conv_cache.reuse(small_run, conv_cache.cache_key(calibrated, opset), planted)
    other = EncoderSpec("none", 0)
    conv_cache.store(small_run, conv_cache.cache_key(other, opset), planted)
    with pytest.raises(ParityError, match="differs from Keras.*--engine keras"):
        feature_encoder(RunFiles(small_run), other, provider="cpu")
    assert cached_encoder(small_run, conv_cache.cache_key(other, opset)) is None
    assert not (small_run / "features").exists()
