"""The Gradio page: greedy and beam search side by side, and the `caption` API endpoint.

The page works without a bundle too: it says how to build one instead of failing.
"""
from __future__ import annotations

import difflib
import html
import inspect
import logging
import math
from pathlib import Path

import gradio as gr

from demo.bundle_layout import DEFAULT_VARIANT, preferred
from demo.captioner_pool import NO_MODEL, CaptionerPool, run_caption
from demo.errors import CaptionerError
from demo.generation import COMPARED, GENERATION, GenerationConfig, control, field_names, field_type
from demo.model_card import ModelCard, read_model_card
from demo.preprocess import ImageSource
from demo.request_queue import RequestQueue
from demo.web.explain_panel import SIDES, add_panel
from demo.web.upload import ImageUpload

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"  # demo/examples
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# The API's positional order, frozen: the image, the first four options, the variants, then the options added
# since (gradio_client fills in parameters a call leaves out with the controls' values).
FIRST_OPTIONS = 4
PARAMETERS = ("image", *field_names()[:FIRST_OPTIONS], "variant", "decoder_variant", *field_names()[FIRST_OPTIONS:])
log = logging.getLogger(__name__)


def example_images() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def highlight(words: list[str], other: list[str]) -> list[tuple[str, str | None]]:
    """Words of one caption, those not shared (in order) with the other caption labelled 'differs'."""
    matcher = difflib.SequenceMatcher(a=words, b=other, autojunk=False)
    shared = {i for block in matcher.get_matching_blocks() for i in range(block.a, block.a + block.size)}
    return [(word + " ", None if i in shared else "differs") for i, word in enumerate(words)]


UNSURE_RGB = "234, 88, 12"  # orange: the stronger, the less sure the model was of the word
DIFFERS_STYLE = "border-bottom: 3px solid #2563eb;"  # blue underline: the word is not in the other caption
WORD_STYLE = ("display: inline-flex; flex-direction: column; align-items: center; margin: 0 2px 6px 0; "
              "padding: 2px 5px; border-radius: 5px; line-height: 1.25;")
CONFIDENCE_NOTE = ("Shading: the stronger the orange, the less sure the model was of the word; the number under "
                   "it is its probability (hover for the log-probability). Underlined in blue: words not in the "
                   "other caption.")


def card_line(card: ModelCard | None) -> str:
    """The page's one line about the loaded model, from its card: what it was trained on and can describe."""
    if card is None:
        return ("This bundle has no model card (it was exported before cards existed): re-export it with "
                "`python -m export --run RUN` to see here what it was trained on.")
    summary = card.summary or "the card does not say what it was trained on"
    return f"**This model:** {summary} ([model card](#model-card), at the bottom of the page)"


def confidence_html(words: list[str], word_log_probs: list[float], other: list[str]) -> str:
    """A caption as HTML: each word shaded by how unsure the model was of it, its probability beneath it and in
    its tooltip, and the words that differ from the other search's caption underlined."""
    if not words:
        return '<div class="confidence"><em>(empty caption: the model ended at once)</em></div>'
    spans = []
    for (word, label), log_prob in zip(highlight(words, other), word_log_probs):
        prob = math.exp(log_prob)
        style = WORD_STYLE + f" background: rgba({UNSURE_RGB}, {0.8 * (1 - prob):.3f});" + \
            (DIFFERS_STYLE if label else "")
        spans.append(f'<span class="word{" differs" if label else ""}" data-prob="{prob:.4f}" '
                     f'title="p = {prob:.3f}, log-prob {log_prob:.3f}" style="{style}">'
                     f'<span class="word-text" style="font-size: 1.15em">{html.escape(word.strip())}</span>'
                     f'<span class="word-prob" style="font-size: 0.72em; opacity: 0.75">{prob:.2f}</span></span>')
    return f'<div class="confidence">{"".join(spans)}</div>'


def page_config(values: dict) -> GenerationConfig:
    """The search the page's (or the API's) settings ask for: `COMPARED`'s fields, each as given where it was
    given; "beams to list" at most the beam width, as the slider cannot know the other slider's value."""
    numbers = {name: field_type(name)(values[name]) for name in field_names() if values.get(name) is not None}
    beams = numbers.get("num_beams", COMPARED.num_beams)
    listed = min(numbers.get("num_return_sequences", COMPARED.num_return_sequences), max(beams, 1))
    return COMPARED.replace(**numbers | {"num_return_sequences": listed})


def side_config(settings: dict, side: str) -> GenerationConfig:
    """The search whose caption one side of the page shows: the beam settings, or the same made greedy."""
    config = page_config(settings)
    return config.greedy() if side == "greedy" else config


def caption_or_explain(pool: CaptionerPool, image: ImageSource | None, settings: dict, variant: str,
                       decoder_variant: str, requests: RequestQueue | None = None, explain: bool = False) -> dict:
    """`run_caption` on the page's settings, admitted by the server's `requests` (shared with its HTTP API: over
    its bound the request is refused at once), with a bad input shown to the user as its message and logged as
    one line.

    Gradio prints a full traceback for every `gr.Error` by default: a page of noise per bad upload in
    the server log, and a server whose output pipe nobody reads stalls once the pipe fills.
    """
    try:
        config = page_config(settings)
        def work() -> dict:
            return run_caption(pool, image, config, variant, decoder_variant, explain=explain)
        return work() if requests is None else requests.admit().run(work)
    except CaptionerError as exc:
        log.info("caption refused: %s", exc)
        raise gr.Error(str(exc), print_exception=False) from None


def _slider(name: str, pool: CaptionerPool) -> gr.Slider:
    """The page's control for one generation option, at the comparison's value (the bundle's length for
    max_length)."""
    shown = control(name)
    value = getattr(COMPARED, name)
    if name == "max_length":
        value = int(min(shown.maximum, max(shown.minimum, GENERATION.max_length or pool.max_length())))
    return gr.Slider(shown.minimum, shown.maximum, value=value, step=shown.step, label=shown.label,
                     elem_id=name.replace("_", "-"))


def build_app(pool: CaptionerPool, requests: RequestQueue | None = None) -> gr.Blocks:
    """The page and its `caption` endpoint on `pool`'s models. With `requests`, every caption is admitted by it
    (the bound the HTTP API shares), and Gradio hands each event over at once: `requests` decides what waits, what
    runs (its workers) and what is refused; with the pool's batching on, concurrent requests share encoder passes
    (`demo.encoder_batching`)."""
    bundle = pool.bundle
    variants = pool.variants or [DEFAULT_VARIANT]
    decoder_variants = pool.decoder_variants or [DEFAULT_VARIANT]
    with gr.Blocks(title="VGG16 + LSTM captioner") as app:
        gr.Markdown("# VGG16 + LSTM image captioner\nGreedy and beam search side by side, on ONNX Runtime, "
                    "each word shaded by the model's confidence in it.")
        if pool.error:
            gr.Markdown(NO_MODEL.format(bundle=bundle, why=pool.error), elem_id="no-model")
        else:
            card = read_model_card(bundle)
            gr.Markdown(card_line(card), elem_id="model-summary")
        with gr.Row():
            with gr.Column(scale=1):
                image = ImageUpload(label="Image", type="filepath", image_mode=None,
                                    sources=["upload", "webcam", "clipboard"], elem_id="image-input")
                examples = example_images()
                if examples:
                    gr.Examples(examples=examples, inputs=image, label="Examples")
            with gr.Column(scale=1):
                options = {name: _slider(name, pool) for name in field_names()}
                variant = gr.Radio(variants, value=preferred(variants), label="Encoder variant",
                                   visible=len(variants) > 1)
                decoder_variant = gr.Radio(decoder_variants, value=preferred(decoder_variants), label="Decoder variant",
                                           visible=len(decoder_variants) > 1, elem_id="decoder-variant")
                button = gr.Button("Caption", variant="primary", elem_id="caption-button")
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Greedy")
                greedy_text = gr.HTML(label="Greedy caption", elem_id="greedy-caption")
                greedy_info = gr.Markdown(elem_id="greedy-info")
                buttons = {"greedy": gr.Button(SIDES["greedy"], size="sm", elem_id="explain-greedy")}
            with gr.Column():
                gr.Markdown("### Beam")
                beam_text = gr.HTML(label="Beam caption", elem_id="beam-caption")
                beam_list = gr.Dataframe(headers=["caption", "log-prob", "normalised", "least sure word (p)"],
                                         label="n-best", elem_id="beam-list", interactive=False, wrap=True,
                                         column_widths=["58%", "14%", "14%", "14%"])
                beam_info = gr.Markdown(elem_id="beam-info")
                buttons["beam"] = gr.Button(SIDES["beam"], size="sm", elem_id="explain-beam")
        gr.Markdown(CONFIDENCE_NOTE, elem_id="confidence-note")
        named = options | {"image": image, "variant": variant, "decoder_variant": decoder_variant}
        inputs = [named[name] for name in PARAMETERS]
        add_panel(pool, requests, image, inputs, lambda values: dict(zip(PARAMETERS, values)), side_config, buttons)
        footer = gr.Markdown(elem_id="run-info")
        if not pool.error and card is not None:
            with gr.Accordion("Model card", open=False, elem_id="model-card"):
                gr.Markdown(card.text)
        api_result = gr.JSON(visible=False)

        def answer(values: tuple, explain: bool = False) -> dict:
            """The page's inputs, in `PARAMETERS` order, answered (or refused with a message)."""
            settings = dict(zip(PARAMETERS, values))
            return caption_or_explain(pool, settings["image"], settings, settings["variant"],
                                      settings["decoder_variant"], requests, explain)

        def on_click(*values):
            result = answer(values)
            greedy, beam = result["greedy"], result["beam"]
            greedy_words, beam_words = greedy["caption"].split(), beam["caption"].split()
            shared = f" (shared with {result['encoder_batch'] - 1} other requests)" if result["encoder_batch"] > 1 \
                else ""
            return (
                confidence_html(greedy_words, greedy["word_log_probs"], beam_words),
                f"log-prob {greedy['log_prob']:.3f} (words {sum(greedy['word_log_probs']):.3f}, end "
                f"{greedy['end_log_prob']:.3f}) · decode {greedy['timings_ms']['decoder_ms_per_image']:.1f} ms",
                confidence_html(beam_words, beam["word_log_probs"], greedy_words),
                [[c["caption"], round(c["log_prob"], 3), round(c["score"], 3),
                  round(min(map(math.exp, c["word_log_probs"]), default=1.0), 2)] for c in beam["candidates"]],
                f"beam {beam['num_beams']} · log-prob {beam['log_prob']:.3f} (words "
                f"{sum(beam['word_log_probs']):.3f}, end {beam['end_log_prob']:.3f}) · decode "
                f"{beam['timings_ms']['decoder_ms_per_image']:.1f} ms",
                f"encoder {result['encoder_ms']:.1f} ms{shared} · provider **{result['provider']}** · "
                f"variant **{result['variant']}** · decoder **{result['decoder_variant']}**",
            )

        def api(*values) -> dict:
            return answer(values)

        def api_explained(*values) -> dict:
            return answer(values, explain=True)

        # named parameters: API callers may pass settings by these names (GenerationConfig's); Gradio reads them
        # from the signature
        api.__signature__ = api_explained.__signature__ = inspect.Signature(
            [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in PARAMETERS])
        # with `requests`, Gradio's queue passes every caption event on at once (one limit for both events), and
        # `requests` bounds them; else the queue's default (demo.web.serve.CONCURRENCY)
        limit = requests.capacity if requests else "default"
        button.click(on_click, inputs, [greedy_text, greedy_info, beam_text, beam_list, beam_info, footer],
                     api_visibility="private", concurrency_id="caption", concurrency_limit=limit)
        gr.Button(visible=False).click(api, inputs, api_result, api_name="caption", concurrency_id="caption",
                                       concurrency_limit=limit)
        # `caption`'s answer with each caption's occlusion maps: its own endpoint, as a parameter added to `caption`
        # would break the raw HTTP calls that send `caption`'s values by position
        gr.Button(visible=False).click(api_explained, inputs, api_result, api_name="explain", concurrency_id="caption",
                                       concurrency_limit=limit)
    return app
