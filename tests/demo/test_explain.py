"""Occlusion maps per word (`demo.occlusion`): right numbers, pointing at what the words name, on every surface.

On the suite's shared run, int8 encoder (50 encoder passes per image: a quarter of fp32's time, and the variant
the page's test picks too). The maps are checked against the scenes' recorded boxes with reference captions
(teacher forcing explains any caption of known words), so the premise is the scene, not what this run's model
happens to write.

Slow: hundreds of encoder passes, a subprocess, a server and a browser.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from demo.generation import COMPARED, GENERATION
from tests.helpers import REPO, offline_env, require_chromium, split_images

pytestmark = pytest.mark.slow
SCENES = 8  # test-split scenes the pointing test explains: about a dozen named shapes, a few seconds each


@pytest.fixture(scope="module")
def int8_captioner(exported_run):
    from demo.captioner import Captioner

    return Captioner(exported_run / "onnx", provider="cpu", variant="int8")


def test_teacher_forcing_gives_the_searchs_own_log_probs(int8_captioner, exported_run):
    """On the whole image, each word's teacher-forced log-probability (and the end's) is the one the search
    reported for its caption, greedy and every beam candidate alike."""
    from demo.occlusion import explain_image
    from demo.preprocess import load_image

    captioner, image = int8_captioner, split_images(exported_run, count=1)[0]
    features, _ = captioner.encode(load_image(image)[None])
    beams = captioner.caption([image], COMPARED)[0]
    for candidate in (captioner.caption([image])[0].candidates[0], *beams.candidates):
        targets = [*map(captioner.vocab.id_of, candidate.tokens), captioner.vocab.end_id]
        forced = captioner.decoder.word_log_probs(features, captioner.vocab.start_id, targets)[0]
        assert forced == pytest.approx([*candidate.word_log_probs, candidate.end_log_prob], abs=1e-5)
    explained = explain_image(captioner, image, COMPARED, candidate=1)
    assert explained.caption == beams.candidates[1].caption
    assert [w.log_prob for w in explained.words] == pytest.approx(beams.candidates[1].word_log_probs, abs=1e-5)
    assert all(w.drops.shape == (explained.grid.cells,) * 2 for w in explained.words)


def test_maps_point_at_the_named_shapes_far_more_often_than_chance(int8_captioner, exported_run):
    """Shape and colour words of each scene's reference caption: the map's peak falls in that shape's box far
    more often than a uniformly placed peak would (chance: the boxes' mean share of the image, from these very
    scenes), by three binomial standard deviations."""
    from demo.occlusion import explain_caption, occluded_features
    from demo.preprocess import load_image
    from demo.text import tokenize
    from train.captions_file import read_captions
    from train.pointing_game import named_words, score_word
    from train.scene_scoring import load_scenes

    captions = read_captions(exported_run / "captions.json")
    entries = captions.split("test")[:SCENES]
    scenes = load_scenes(captions, [e.id for e in entries]).scenes
    scores = []
    for entry, scene in zip(entries, scenes):
        words = tokenize(entry.captions[0])
        features = occluded_features(int8_captioner, load_image(Path(captions.image_root) / entry.id))
        explanation = explain_caption(int8_captioner, features, words)
        scores += [score_word(explanation, w) for w in named_words(words, scene) if w.kind != "position"]
    n, chance = len(scores), float(np.mean([s["chance"] for s in scores]))
    assert n >= SCENES, "every reference caption names its shapes"
    hits = sum(s["hit"] for s in scores)
    bound = n * chance + 3 * math.sqrt(n * chance * (1 - chance))
    assert hits > bound, (hits, n, chance)
    assert np.mean([s["mass"] for s in scores]) > chance, "more of the maps' mass in the boxes than a flat map's"


def test_explain_writes_a_map_per_word_a_strip_and_the_numbers(exported_run, tmp_path):
    """`python -m demo explain`: per image a folder with one PNG per word of the caption `caption` gives, a strip
    and explanation.json; an unreadable file is refused alone (exit 1) and the other image still explained."""
    from demo.explain_files import RECORD, STRIP, word_file
    from demo.occlusion import GRID

    image, broken = split_images(exported_run, count=1)[0], tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    bundle = str(exported_run / "onnx")
    result = subprocess.run([sys.executable, "-m", "demo", "explain", str(image), str(broken), "--model", bundle,
                             "--variant", "int8", "--out", str(tmp_path / "out")], cwd=REPO, env=offline_env(),
                            capture_output=True, text=True, timeout=540)
    assert result.returncode == 1 and "broken.png" in result.stderr, result.stderr[-2000:]
    caption = subprocess.run([sys.executable, "-m", "demo", "caption", str(image), "--model", bundle, "--variant",
                              "int8"], cwd=REPO, env=offline_env(), capture_output=True, text=True, timeout=540)
    words = caption.stdout.split("\t")[1].split()
    folder = tmp_path / "out" / image.stem
    record = json.loads((folder / RECORD).read_text())
    assert record["caption"].split() == words and [w["word"] for w in record["words"]] == words
    assert record["grid"] == GRID.to_dict() and record["variant"] == "int8"
    assert all(np.shape(w["drops"]) == (GRID.cells, GRID.cells) for w in record["words"])
    assert sorted(p.name for p in folder.glob("*.png")) == sorted([STRIP, *(word_file(i, w) for i, w in
                                                                           enumerate(words, start=1))])


def test_the_http_api_returns_each_captions_maps(served_app, int8_captioner):
    """`explain=true`: each caption of the answer carries its maps, on the grid it states, with the caption's own
    per-word log-probabilities."""
    from tests.demo.test_rest_api import wait_healthy

    wait_healthy(served_app)
    image = split_images(Path(int8_captioner.bundle).parent, count=1)[0]
    answer = httpx.post(served_app + "v1/captions", params={"explain": "true", "variant": "int8"},
                        content=image.read_bytes(), timeout=300).json()
    (row,) = answer["images"]
    explanation = row["explanation"]
    assert [w["word"] for w in explanation["words"]] == row["tokens"]
    assert [w["log_prob"] for w in explanation["words"]] == pytest.approx(row["word_log_probs"], abs=1e-5)
    assert explanation["grid"]["cells"] ** 2 + 1 == explanation["timings_ms"]["images_encoded"]
    assert GENERATION.num_beams == 1 and answer["variant"] == "int8"


def test_the_page_explains_a_caption_and_shows_the_word_clicked(served_app, int8_captioner):
    """In Chromium: Explain under the greedy caption, then the word list (each with its probability), the large
    map and the strip appear; clicking another word shows its map."""
    from playwright.sync_api import sync_playwright

    from tests.helpers import CHROMIUM

    require_chromium()
    image = split_images(Path(int8_captioner.bundle).parent, count=1)[0]
    greedy = int8_captioner.caption([image])[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(served_app)
        page.locator("#image-input input[type=file]").set_input_files(str(image))
        page.locator("#image-input img").first.wait_for(timeout=30_000)
        page.get_by_label("int8").check()
        page.locator("#caption-button").click()
        page.wait_for_function("document.querySelector('#run-info').innerText.includes('int8')", timeout=60_000)
        page.locator("#explain-greedy").click()
        page.locator("#explain-map img").first.wait_for(timeout=300_000)
        labels = page.locator("#explain-word label").all_inner_texts()
        assert [label.rsplit(" (", 1)[0] for label in labels] == greedy.tokens
        assert labels[0].endswith(f"({math.exp(greedy.word_log_probs[0]):.2f})")
        assert page.locator("#explain-strip img").count() == len(greedy.tokens)
        before = page.locator("#explain-map img").first.get_attribute("src")
        shown = page.locator("#explain-word label:has(input:checked)").inner_text()
        page.locator("#explain-word label").nth(next(i for i, text in enumerate(labels) if text != shown)).click()
        page.wait_for_function(f"document.querySelector('#explain-map img').src != {json.dumps(before)}",
                               timeout=30_000)
        (REPO / "test-artifacts").mkdir(exist_ok=True)
        page.screenshot(path=str(REPO / "test-artifacts" / "explain_page.png"), full_page=True)
        browser.close()
