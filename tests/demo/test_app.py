"""The Gradio app on a real server: the API endpoint, a real browser, --share offline, no bundle.

Slow: starts servers and drives headless Chromium.
"""
import json
import re
from pathlib import Path

import pytest

from demo.generation import GenerationConfig
from tests.helpers import (
    REPO,
    Drained,
    api_settings,
    ask_caption,
    assert_same_answer,
    auto_provider,
    browser_caption,
    require_chromium,
    start_server,
)

pytestmark = pytest.mark.slow
ARTIFACTS = REPO / "test-artifacts"


def example_image() -> Path:
    from demo.web.page import example_images

    return Path(example_images()[0])


def test_api_endpoint_returns_the_runtime_captions(served_app, captioner):
    """Asked with nothing but the image, the API answers what `Captioner.compare` does with its own defaults: the
    page's settings are the product's, whatever this run's captions are."""
    image = example_image()
    result = ask_caption(served_app, image)
    expected = captioner.compare(image)
    assert_same_answer(result, expected)
    assert result["beam"]["caption"] == expected.beam.caption and result["beam"]["num_beams"] == expected.num_beams
    assert result["provider"] == auto_provider() and result["variant"] == "fp32" and result["encoder_ms"] > 0
    assert result["decoder_variant"] == "fp32"
    json.dumps(result)  # JSON-able as promised


def test_api_takes_generation_options_by_their_generation_config_names(served_app, captioner):
    """A call that names its parameters (Hugging Face's names, as `GenerationConfig` has them) gets the runtime's
    answer for those options, the others at the page's defaults; with no word pair allowed twice, none repeats."""
    from gradio_client import Client, handle_file

    image = example_image()
    result = Client(served_app, verbose=False).predict(image=handle_file(str(image)), num_beams=4,
                                                       no_repeat_ngram_size=2, api_name="/caption")
    expected = captioner.compare(image, num_beams=4, no_repeat_ngram_size=2)
    assert_same_answer(result, expected)
    assert result["beam"]["num_beams"] == 4 and result["beam"]["caption"] == expected.beam.caption
    for search in ("greedy", "beam"):
        words = result[search]["caption"].split()
        pairs = list(zip(words, words[1:]))
        assert len(pairs) == len(set(pairs)), result[search]["caption"]
    # fewer beams than the page lists by default (3): it lists them all, as the slider cannot know the other's value
    narrow = Client(served_app, verbose=False).predict(image=handle_file(str(image)), num_beams=2,
                                                       api_name="/caption")
    assert_same_answer(narrow, captioner.compare(image, num_beams=2, num_return_sequences=2))


def test_api_takes_the_decoder_variant_last_and_older_calls_still_work(int8_decoder_run):
    """On a bundle with both decoder steps: the six-argument call of callers written before the decoder variant
    existed gets fp32, the seventh argument picks int8, and the answer says which one ran."""
    from demo.captioner import Captioner

    image, config = example_image(), GenerationConfig(num_beams=3, max_length=20, num_return_sequences=3)
    settings = api_settings(config)
    process, url = start_server(int8_decoder_run / "onnx", "--provider", "cpu")
    server = Drained(process)
    try:
        older = ask_caption(url, image, *settings)
        int8 = ask_caption(url, image, *settings, decoder_variant="int8")
    finally:
        server.stop()
    assert (older["variant"], older["decoder_variant"]) == ("fp32", "fp32")
    assert (int8["variant"], int8["decoder_variant"]) == ("fp32", "int8")
    want = Captioner(int8_decoder_run / "onnx", provider="cpu", decoder_variant="int8").compare(image, config)
    assert_same_answer(int8, want)


def test_browser_uploads_an_example_and_reads_both_captions(served_app, captioner, exported_run):
    """The page shows both captions word by word, each word shaded by (and labelled with) its probability as the
    runtime computes it, the words the two captions do not share marked, and the card's one-line summary."""
    import math

    from demo.model_card import read_model_card
    from demo.web.page import highlight

    require_chromium()
    image = example_image()
    greedy = captioner.caption([image])[0]
    beam = captioner.caption([image], num_beams=3, num_return_sequences=3)[0]
    shown = {}
    shown_greedy, shown_beam, footer = browser_caption(served_app, image, ARTIFACTS / "demo_page.png", shown)
    assert shown_greedy == greedy.caption and shown_beam == beam.caption, (shown_greedy, shown_beam)
    assert f"provider {auto_provider()}" in footer and "variant fp32" in footer, footer
    for name, result, other in (("greedy", greedy, beam), ("beam", beam, greedy)):
        probs = [math.exp(lp) for lp in result.word_log_probs]
        assert shown[f"{name}_probs"] == pytest.approx(probs, abs=1e-4)
        assert shown[f"{name}_shown_probs"] == [f"{p:.2f}" for p in probs]
        marked = highlight(result.tokens, other.tokens)
        assert shown[f"{name}_differs"] == [word.strip() for word, label in marked if label]
    card = read_model_card(exported_run / "onnx")
    assert card is not None and card.plain_summary in shown["summary"], shown["summary"]


def test_share_offline_is_one_line_and_keeps_serving(exported_run):
    import urllib.request

    process, url = start_server(exported_run / "onnx", "--share")
    server = Drained(process)
    server.wait_for_line(("share:", "public link:"))  # the share attempt ends after the local server is up
    try:
        assert urllib.request.urlopen(url, timeout=10).status == 200, "still serving after the share attempt"
    finally:
        output = server.stop()
    assert "Traceback" not in output
    share_lines = [line for line in output.splitlines() if line.startswith(("share:", "public link:"))]
    assert len(share_lines) == 1, output


def test_page_without_a_bundle_says_how_to_build_one(tmp_path):
    import urllib.request

    process, url = start_server(tmp_path / "missing")
    try:
        config = urllib.request.urlopen(url + "config", timeout=10).read().decode()
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "make demo" in config and "Traceback" not in output


def test_files_outside_the_app_are_not_served(served_app):
    import urllib.error
    import urllib.request

    for path in ("gradio_api/file=/etc/passwd", f"gradio_api/file={REPO / 'README.md'}", "file=/etc/passwd"):
        try:
            status = urllib.request.urlopen(served_app + path, timeout=10).status
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status in (403, 404), (path, status)


def test_highlight_marks_the_words_that_differ():
    from demo.web.page import highlight

    marked = highlight("a big red circle".split(), "a small red circle".split())
    assert [label for _, label in marked] == [None, "differs", None, None]
    assert re.sub(r"\s+", " ", "".join(w for w, _ in marked)).strip() == "a big red circle"
