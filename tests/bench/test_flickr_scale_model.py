"""The Flickr-scale benchmark model: a real run folder built from captions alone, with stand-in features
that can be trained on but never exported as an encoder, and a second call that rebuilds nothing."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench.flickr_scale_model import REPORT, ScaleModelConfig, features, prepare, stand_in_features
from demo.bundle_layout import MANIFEST
from demo.errors import EXIT_ERROR
from demo.text import tokenize
from demo.vocab import SPECIAL_TOKENS
from tests.helpers import run_module
from train.captions_file import read_captions
from train.feature_cache import CacheMismatch, cache_paths, load_cache
from train.run_features import run_encoder_spec
from train.run_files import RunFiles

COLORS = ("red", "blue", "green", "yellow", "black", "white")
ANIMALS = ("dog", "cat", "horse", "bird", "cow")
PLACES = ("grass", "beach", "snow", "road")


def token_file(path: Path, num_images: int) -> Path:
    """A Flickr8k token file (IMAGE.jpg#N<TAB>caption, five per image) whose words tell the images apart."""
    lines = []
    for i in range(num_images):
        color, animal, place = COLORS[i % 6], ANIMALS[i % 5], PLACES[i % 4]
        captions = (f"A {color} {animal} runs on the {place} .", f"The {animal} is {color} .",
                    f"A {animal} on the {place} .", f"A {color} {animal} in the {place} .",
                    f"An animal , a {animal} , plays on the {place} .")
        lines += [f"{1000 + i}_abc.jpg#{n}\t{caption}" for n, caption in enumerate(captions)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_captions_become_a_run_whose_stand_in_cache_trains_but_never_exports(tmp_path):
    captions = token_file(tmp_path / "Flickr8k.token.txt", 40)
    cfg = ScaleModelConfig(captions=captions, out=tmp_path / "run")
    prepare(cfg)
    features(cfg)
    files = RunFiles(cfg.out)
    run = read_captions(files.captions)
    assert len(run.images) == 40 and {e.split for e in run.images} == {"train", "val", "test"}
    assert not run.image_root.exists()  # no images: captions alone
    words = {w for e in run.images for c in e.captions for w in tokenize(c)}  # every caption: the full vocabulary
    vocab = json.loads(files.vocab.read_text())
    assert vocab["size"] == len(words) + len(SPECIAL_TOKENS) and vocab["min_count"] == 1
    assert set(json.loads(files.splits.read_text())) == {"train", "val", "test"}
    config = json.loads(files.config.read_text())
    assert config["features"]["stand_in"] == "stand-in: bag-of-words projection v1, seed 0" and "prepare" in config

    meta = json.loads(cache_paths(files)["meta"].read_text())
    assert meta["complete"] and meta["weights"] == "stand-in: bag-of-words projection v1, seed 0"
    cache = load_cache(files)  # what fit and evaluate open
    assert cache.features.shape == (40, 4096) and cache.features.dtype == np.float16
    assert np.all(np.asarray(cache.features) >= 0)
    with pytest.raises(CacheMismatch, match="stand-in features"):
        run_encoder_spec(files)  # what the encoder export opens


def test_stand_in_features_carry_the_words_of_their_captions():
    """Images that share words have closer features than images that share none; the same seed, the same rows."""
    documents = [["red", "dog", "grass"], ["red", "dog", "beach"], ["blue", "cat", "snow"]]
    rows = stand_in_features(documents, seed=0)
    cosine = rows @ rows.T / np.outer(np.linalg.norm(rows, axis=1), np.linalg.norm(rows, axis=1))
    assert cosine[0, 1] > cosine[0, 2] + 0.2
    np.testing.assert_array_equal(rows, stand_in_features(documents, seed=0))
    assert not np.array_equal(rows, stand_in_features(documents, seed=1))


@pytest.mark.parametrize("content, message", [
    (None, r"--captions .*: no such file"),
    ("this is not a caption file\nnor is this\n", r"no caption could be read from 2 lines"),
])
def test_a_missing_or_unparsable_captions_file_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "Flickr8k.token.txt"
    if content is not None:
        path.write_text(content)
    result = run_module("bench.flickr_scale_model", "--captions", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == EXIT_ERROR
    assert re.search(message, result.stderr) and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_trained_decoder_only_bundle_is_built_once_and_reused(tmp_path):
    captions = token_file(tmp_path / "Flickr8k.token.txt", 120)
    args = ("--captions", str(captions), "--out", str(tmp_path / "run"), "--epochs", "3",
            "--embed-dim", "32", "--hidden-dim", "32")
    first = run_module("bench.flickr_scale_model", *args, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    files = RunFiles(tmp_path / "run")
    for path in (files.captions, files.vocab, files.model, files.metrics, files.bundle / MANIFEST):
        assert path.is_file(), path
    report = json.loads((files.root / REPORT).read_text())
    assert set(report["bleu_4"]) == {"greedy", "beam_3"}
    greedy = report["captions"]["greedy"]
    assert greedy["images"] == report["images"]["test"]
    assert 0.0 <= greedy["ended_by_end_share"] <= 1.0 and greedy["mean_length_words"] > 0
    assert report["vocab_size"] == json.loads(files.vocab.read_text())["size"]
    manifest = json.loads((files.bundle / MANIFEST).read_text())
    assert "encoder" not in manifest["models"]  # decoder only: there is no encoder for stand-in features

    trained = files.model.stat().st_mtime_ns
    second = run_module("bench.flickr_scale_model", *args, timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("already done, reusing it") == 6
    assert files.model.stat().st_mtime_ns == trained

    other = run_module("bench.flickr_scale_model", *args[:-1], "64", timeout=120)
    assert other.returncode == EXIT_ERROR and "built with other options" in other.stderr
    assert "hidden_dim: 32 -> 64" in other.stderr
