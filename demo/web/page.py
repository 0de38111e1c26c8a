"""The Gradio page: greedy and beam search side by side, and the `caption` API endpoint.

The page works without a bundle too: it says how to build one instead of failing.
"""
from __future__ import annotations

import difflib
import logging
import os
import threading
from pathlib import Path

import gradio as gr

from demo.bundle_layout import decoder_variants_in, runtime_files, variants_in
from demo.captioner import Captioner, CaptionResult, Comparison
from demo.errors import CaptionerError
from demo.generation import DEFAULTS
from demo.manifest import BundleError, verify_bundle, verify_files
from demo.preprocess import ImageSource
from demo.vocab import VocabularyError
from demo.web.upload import ImageUpload

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"  # demo/examples
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
NO_MODEL = ("**No model bundle at `{bundle}`.** Build the default one with `make demo` (or train a run and "
            "`python -m export --run RUN`), then start the app again. Details: {why}")
MAX_LENGTH_RANGE = (5, 40)  # the slider's; it starts at the bundle vocabulary's max_length (clamped)
log = logging.getLogger(__name__)


class CaptionerPool:
    """One Captioner per (encoder variant, decoder variant), created on first use and shared by all requests."""

    def __init__(self, bundle: Path, provider: str = "auto"):
        self.bundle, self.provider = Path(bundle), provider
        self._loaded: dict[tuple[str, str], Captioner] = {}
        self._lock = threading.Lock()
        self.error: str | None = None
        try:
            self.manifest = verify_bundle(self.bundle)
            self.variants = variants_in(self.manifest["files"])
            self.decoder_variants = decoder_variants_in(self.manifest["files"])
            # load now: a broken bundle shows on the page, not on the first request (a bundle without an
            # encoder or a decoder step is refused by the Captioner, which says why)
            self.get(*self.default_pair())
        except (BundleError, VocabularyError, OSError) as exc:  # a provider error stops the server
            self.variants, self.decoder_variants, self.error = [], [], str(exc)

    def default_pair(self) -> tuple[str, str]:
        """The (encoder, decoder) variants the page starts with: fp32 where the bundle has it."""
        return (self.variants or ["fp32"])[0], (self.decoder_variants or ["fp32"])[0]

    def max_length(self) -> int:
        """The slider's first value: what `max_length=None` means for this bundle (its vocabulary's)."""
        low, high = MAX_LENGTH_RANGE
        wanted = DEFAULTS.max_length or (DEFAULTS.max_length_without_vocabulary if self.error else
                                         self.get(*self.default_pair()).vocab.max_length)
        return min(high, max(low, wanted))

    def get(self, variant: str, decoder_variant: str = "fp32") -> Captioner:
        key = (variant, decoder_variant)
        with self._lock:
            if key not in self._loaded:  # every file's sha256 was checked once, at start; sizes again here
                if self._loaded:  # a pair first asked for later: its files may have been replaced since
                    self._verify_again(variant, decoder_variant)
                self._loaded[key] = Captioner(self.bundle, provider=self.provider, variant=variant,
                                              decoder_variant=decoder_variant, check_hashes=False)
            return self._loaded[key]

    def _verify_again(self, variant: str, decoder_variant: str) -> None:
        """The sha256 of the files a lazily loaded pair opens (its encoder, the image projection, its decoder
        step, the vocabulary); the other variants' files are not read. A variant the bundle lacks is left to the
        Captioner to refuse."""
        if variant not in self.variants or decoder_variant not in self.decoder_variants:
            return
        try:
            verify_files(self.bundle, self.manifest,
                         [n for n in runtime_files(variant, decoder_variant) if n in self.manifest["files"]])
        except BundleError as exc:
            raise BundleError(f"{exc} (or, if it was re-exported after this server started, restart the "
                              "server)") from None


def example_images() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def highlight(words: list[str], other: list[str]) -> list[tuple[str, str | None]]:
    """Words of one caption, those not shared (in order) with the other caption labelled 'differs'."""
    matcher = difflib.SequenceMatcher(a=words, b=other, autojunk=False)
    shared = {i for block in matcher.get_matching_blocks() for i in range(block.a, block.a + block.size)}
    return [(word + " ", None if i in shared else "differs") for i, word in enumerate(words)]


def run_caption(pool: CaptionerPool, image: ImageSource | None, num_beams: int, max_length: int,
                length_penalty: float, num_return_sequences: int, variant: str,
                decoder_variant: str = "fp32") -> dict:
    """Greedy and beam results for one image, as a JSON-able dict (what the API returns).

    `image` is the upload undecoded (see `demo.web.upload`), so `load_image` alone decides what is an image.
    """
    if pool.error:
        raise CannotCaption(NO_MODEL.format(bundle=pool.bundle, why=pool.error))
    if image is None:
        raise CannotCaption("upload an image first (or pick an example)")
    found = pool.get(variant, decoder_variant).compare(image, int(num_beams), int(max_length), length_penalty,
                                                       int(num_return_sequences), name=_upload_name(image))
    return to_json(found)


class CannotCaption(CaptionerError):
    """A request the page cannot answer: no bundle loaded, or no image given."""


def to_json(found: Comparison) -> dict:
    return {"greedy": _summary(found.greedy), "beam": _summary(found.beam) | {"num_beams": found.num_beams},
            "provider": found.provider, "variant": found.variant, "decoder_variant": found.decoder_variant,
            "encoder_ms": found.encoder_ms}


def caption_or_explain(pool: CaptionerPool, *args) -> dict:
    """`run_caption`, with a bad input shown to the user as its message and logged as one line.

    Gradio prints a full traceback for every `gr.Error` by default: a page of noise per bad upload in
    the server log, and a server whose output pipe nobody reads stalls once the pipe fills.
    """
    try:
        return run_caption(pool, *args)
    except CaptionerError as exc:
        log.info("caption refused: %s", exc)
        raise gr.Error(str(exc), print_exception=False) from None


def _upload_name(image: ImageSource) -> str | None:
    """The uploaded file's own name for error messages (the folder is the server's upload cache)."""
    return Path(image).name if isinstance(image, (str, os.PathLike)) else None


def _summary(result: CaptionResult) -> dict:
    return {"caption": result.caption, "log_prob": result.log_prob, "score": result.score,
            "decode_ms": result.timings["decoder_ms_per_image"],
            "candidates": [{"caption": c.caption, "log_prob": c.log_prob, "score": c.score}
                           for c in result.candidates]}


def build_app(bundle: Path, provider: str = "auto") -> gr.Blocks:
    pool = CaptionerPool(bundle, provider)
    variants = pool.variants or ["fp32"]
    decoder_variants = pool.decoder_variants or ["fp32"]
    with gr.Blocks(title="VGG16 + LSTM captioner") as app:
        gr.Markdown("# VGG16 + LSTM image captioner\nGreedy and beam search side by side, on ONNX Runtime. "
                    "Words where the two captions differ are highlighted.")
        if pool.error:
            gr.Markdown(NO_MODEL.format(bundle=bundle, why=pool.error), elem_id="no-model")
        with gr.Row():
            with gr.Column(scale=1):
                image = ImageUpload(label="Image", type="filepath", image_mode=None,
                                    sources=["upload", "webcam", "clipboard"], elem_id="image-input")
                examples = example_images()
                if examples:
                    gr.Examples(examples=examples, inputs=image, label="Examples")
            with gr.Column(scale=1):
                num_beams = gr.Slider(1, DEFAULTS.max_num_beams, value=DEFAULTS.compared_num_beams, step=1,
                                      label="Beam width")
                max_length = gr.Slider(*MAX_LENGTH_RANGE, value=pool.max_length(), step=1,
                                       label="Maximum length (words)")
                length_penalty = gr.Slider(0.0, 2.0, value=DEFAULTS.length_penalty, step=0.1,
                                           label="Length penalty (GNMT alpha)")
                num_return = gr.Slider(1, DEFAULTS.max_num_beams, value=DEFAULTS.compared_num_return_sequences, step=1,
                                       label="Beams to list")
                variant = gr.Radio(variants, value=variants[0], label="Encoder variant",
                                   visible=len(variants) > 1)
                decoder_variant = gr.Radio(decoder_variants, value=decoder_variants[0], label="Decoder variant",
                                           visible=len(decoder_variants) > 1, elem_id="decoder-variant")
                button = gr.Button("Caption", variant="primary", elem_id="caption-button")
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Greedy")
                greedy_text = gr.HighlightedText(label="Greedy caption", elem_id="greedy-caption",
                                                 color_map={"differs": "orange"}, show_legend=False,
                                                 show_inline_category=False)
                greedy_info = gr.Markdown(elem_id="greedy-info")
            with gr.Column():
                gr.Markdown("### Beam")
                beam_text = gr.HighlightedText(label="Beam caption", elem_id="beam-caption",
                                               color_map={"differs": "orange"}, show_legend=False,
                                               show_inline_category=False)
                beam_list = gr.Dataframe(headers=["caption", "log-prob", "normalised"], label="n-best",
                                         elem_id="beam-list", interactive=False, wrap=True,
                                         column_widths=["70%", "15%", "15%"])
                beam_info = gr.Markdown(elem_id="beam-info")
        footer = gr.Markdown(elem_id="run-info")
        api_result = gr.JSON(visible=False)

        def on_click(*args):
            result = caption_or_explain(pool, *args)
            greedy, beam = result["greedy"], result["beam"]
            greedy_words, beam_words = greedy["caption"].split(), beam["caption"].split()
            return (
                highlight(greedy_words, beam_words),
                f"log-prob {greedy['log_prob']:.3f} · decode {greedy['decode_ms']:.1f} ms",
                highlight(beam_words, greedy_words),
                [[c["caption"], round(c["log_prob"], 3), round(c["score"], 3)] for c in beam["candidates"]],
                f"beam {beam['num_beams']} · log-prob {beam['log_prob']:.3f} · decode {beam['decode_ms']:.1f} ms",
                f"encoder {result['encoder_ms']:.1f} ms · provider **{result['provider']}** · "
                f"variant **{result['variant']}** · decoder **{result['decoder_variant']}**",
            )

        def api(*args) -> dict:
            return caption_or_explain(pool, *args)

        # the decoder variant last: API calls written before it existed still work (gradio_client fills it in
        # with the radio's value: fp32, or the one decoder a Space ships)
        inputs = [image, num_beams, max_length, length_penalty, num_return, variant, decoder_variant]
        button.click(on_click, inputs, [greedy_text, greedy_info, beam_text, beam_list, beam_info, footer],
                     api_visibility="private")
        gr.Button(visible=False).click(api, inputs, api_result, api_name="caption")
    return app
