"""The page's "why each word" panel: an Explain button under each caption, then each word clickable, its map
over the image (with a legend and the word's probability), and a strip of every word's map.

The hidden versions' features are kept (in the session's state) for the image, variant and decoder they were
computed with, so explaining the other caption of the same image is instant.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import gradio as gr
import numpy as np

from demo.captioner_pool import CannotCaption, CaptionerPool, upload_name
from demo.errors import CaptionerError
from demo.heatmap import DISPLAY_WIDTH, THUMB_WIDTH, overlay
from demo.occlusion import GRID, Explanation, explain_caption, occluded_features
from demo.preprocess import load_image, upright_rgb
from demo.request_queue import RequestQueue

SIDES = {"greedy": "Explain the greedy caption", "beam": "Explain the beam caption"}
HOW = ("Each word's map: how much its log-probability falls when that region is hidden (a 7 x 7 grid of "
       "overlapping patches, filled with the network's mean pixel). Red: the regions that made the model say the "
       "word. Click a word, or a small map, to show it large.")
log = logging.getLogger(__name__)


def add_panel(pool: CaptionerPool, requests: RequestQueue | None, image: gr.components.Component,
              inputs: list, settings_of: Callable[[tuple], dict], caption_config: Callable[[dict, str], object],
              buttons: dict[str, gr.Button]) -> None:
    """The panel under the captions; `inputs` are the caption event's, `settings_of` turns their values into the
    page's settings, `caption_config(settings, side)` the search whose caption the side shows."""
    kept = gr.State(None)
    with gr.Group(elem_id="explain-panel"):
        info = gr.Markdown(HOW, elem_id="explain-info")
        word = gr.Radio([], label="Word", elem_id="explain-word", visible=False)
        shown = gr.Image(label="What made the model say it", type="pil", interactive=False, visible=False,
                         elem_id="explain-map")
        strip = gr.Gallery(label="Every word, on one scale (click one)", columns=10, height=220, visible=False,
                           elem_id="explain-strip", allow_preview=False)

    def explain(side: str, cache, *values, progress=gr.Progress()):
        settings = settings_of(values)
        try:
            work = lambda: _explained(pool, settings, caption_config(settings, side), cache, progress)  # noqa: E731
            explanation, cache = requests.admit().run(work) if requests else work()
        except CaptionerError as exc:
            log.info("explanation refused: %s", exc)
            raise gr.Error(str(exc), print_exception=False) from None
        picture = upright_rgb(settings["image"], DISPLAY_WIDTH)
        strongest = int(np.argmax([w.drops.max() for w in explanation.words])) if explanation.words else 0
        choices = [(f"{w.word} ({np.exp(w.log_prob):.2f})", i) for i, w in enumerate(explanation.words)]
        scale = max((float(w.drops.max()) for w in explanation.words), default=0.0) or None  # one scale: a faint
        thumbs = [(overlay(picture, w, GRID, THUMB_WIDTH, scale, legend=False), w.word)  # map is a word the image
                  for w in explanation.words]  # barely decided
        took = explanation.timings_ms
        note = (f"**{side.capitalize()} caption explained:** \"{explanation.caption}\" · {took['images_encoded']} "
                f"encoder passes in {took['encoder_ms'] / 1000:.1f} s (kept for this image), decoder "
                f"{took['decoder_ms']:.0f} ms. {HOW}")
        state = cache | {"explanation": explanation}
        return (state, note, gr.Radio(choices=choices, value=strongest, visible=True),
                gr.Image(_large(state, strongest), visible=True), gr.Gallery(thumbs, visible=True))

    def handler(side: str):
        def run(cache, *values, progress=gr.Progress()):
            return explain(side, cache, *values, progress=progress)
        return run

    for side, button in buttons.items():
        button.click(handler(side), [kept, *inputs], [kept, info, word, shown, strip], api_visibility="private",
                     concurrency_id="caption", concurrency_limit=requests.capacity if requests else "default",
                     show_progress="full")
    word.change(lambda state, index: _large(state, index), [kept, word], [shown], api_visibility="private")
    strip.select(_picked, None, [word], api_visibility="private")


def _explained(pool: CaptionerPool, settings: dict, config, cache: dict | None, progress) -> tuple[Explanation, dict]:
    """The side's caption explained, the hidden versions' features reused when the image and variants match."""
    pool.usable(wait=True)
    image = settings["image"]
    if image is None:
        raise CannotCaption("upload an image first (or pick an example)")
    variant, decoder_variant = settings["variant"], settings["decoder_variant"]
    captioner = pool.get(variant, decoder_variant)
    pixels = load_image(image, name=upload_name(image))
    key = (str(image), variant, decoder_variant)
    if cache and cache.get("key") == key:
        hidden = cache["hidden"]
    else:
        hidden = occluded_features(captioner, pixels, progress=lambda done, total: progress(
            done / total, desc=f"hiding each region: {done} of {total} images encoded"))
    result = captioner.caption_pixels(pixels[None], captioner.options(captioner.check(config)))[0]
    return explain_caption(captioner, hidden, result.tokens), {"key": key, "hidden": hidden}


def _picked(event: gr.SelectData) -> int:
    """A small map clicked: its word becomes the one shown large."""
    return event.index


def _large(state: dict | None, index) -> object:
    if not state or index is None:
        return None
    explanation: Explanation = state["explanation"]
    word = explanation.words[int(index)]
    return overlay(upright_rgb(state["key"][0], DISPLAY_WIDTH), word, explanation.grid)
