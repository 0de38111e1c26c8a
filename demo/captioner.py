"""`Captioner`: an exported bundle on ONNX Runtime, no TensorFlow.

    captioner = Captioner("models/default/onnx")          # provider="auto", variant="fp32" (the table's first)
    result = captioner.caption(["photo.jpg"], GenerationConfig(num_beams=3))[0]  # or caption(paths, num_beams=3)
    print(result.caption, result.log_prob, result.timings)

The encoder runs once over the batch of images; then greedy or beam search
advances every live beam of every image in one decoder call per step.
Generation options are one `GenerationConfig`, whose fields carry the names people know from Hugging Face
(`num_beams`, `max_length`, `length_penalty`, `num_return_sequences`, `no_repeat_ngram_size`).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from demo import bundle_layout as layout
from demo.generation import COMPARED, GENERATION, GenerationConfig
from demo.manifest import REBUILD, BundleError, verify_bundle
from demo.onnx_step import OnnxStepModel, step_threads
from demo.preprocess import ImageSource, load_image
from demo.search import generate, options_for
from demo.search.step import Hypothesis, SearchOptions, require_top_k
from demo.sessions import create_session
from demo.vocab import Vocabulary


@dataclass
class CaptionCandidate:
    caption: str
    tokens: list[str]
    log_prob: float  # total log-probability, <end> included
    score: float  # length-normalised: what the candidates are ranked by
    finished: bool  # False when cut at max_length
    word_log_probs: list[float]  # each word's log-probability given the words before it
    end_log_prob: float  # <end>'s: log_prob == sum(word_log_probs) + end_log_prob

    @property
    def word_probs(self) -> list[float]:
        """Each word's probability: the confidence the page shades words by."""
        return [math.exp(lp) for lp in self.word_log_probs]


@dataclass
class CaptionResult:
    """Best caption of one image, its n-best list, and where the time went (milliseconds)."""

    caption: str
    tokens: list[str]
    log_prob: float
    score: float
    candidates: list[CaptionCandidate]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def word_log_probs(self) -> list[float]:
        return self.candidates[0].word_log_probs

    @property
    def end_log_prob(self) -> float:
        return self.candidates[0].end_log_prob

    def to_dict(self) -> dict:
        """The one answer schema (DESIGN, "Answers"): the CLI's JSON, the JSONL rows and each side of the API's."""
        return {"caption": self.caption, "tokens": self.tokens, "log_prob": self.log_prob, "score": self.score,
                "finished": self.candidates[0].finished, "word_log_probs": self.word_log_probs,
                "end_log_prob": self.end_log_prob, "candidates": [asdict(c) for c in self.candidates],
                "timings_ms": self.timings}


@dataclass
class Comparison:
    """Greedy and beam results of one image, from one encoder pass."""

    greedy: CaptionResult
    beam: CaptionResult
    num_beams: int
    provider: str
    variant: str
    decoder_variant: str = layout.DEFAULT_VARIANT

    @property
    def encoder_ms(self) -> float:
        return self.beam.timings["encoder_ms_per_image"]

    def to_dict(self, encoder_batch: int = 1) -> dict:
        """The API's answer: each search as `CaptionResult.to_dict`; `encoder_ms` is this image's share of its
        encoder pass, `encoder_batch` the images in that pass (1 when it ran alone)."""
        return {"greedy": self.greedy.to_dict(), "beam": self.beam.to_dict() | {"num_beams": self.num_beams},
                "provider": self.provider, "variant": self.variant, "decoder_variant": self.decoder_variant,
                "encoder_ms": self.encoder_ms, "encoder_batch": encoder_batch}


class Captioner:
    def __init__(self, bundle: str | os.PathLike, provider: str = "auto", variant: str = layout.DEFAULT_VARIANT,
                 threads: int | None = None, check_hashes: bool = True,
                 decoder_variant: str = layout.DEFAULT_VARIANT):
        self.bundle = Path(bundle)
        self.manifest = verify_bundle(self.bundle, check_hashes=check_hashes)
        self.vocab = Vocabulary.load(self.bundle / layout.VOCAB)
        if len(self.vocab) != self.manifest["vocab_size"]:  # a BundleError: the fix is the export, not `prepare`
            raise BundleError(f"{self.bundle / layout.VOCAB} has {len(self.vocab)} tokens but the manifest says "
                              f"{self.manifest['vocab_size']}: the vocabulary and the model come from different "
                              f"runs; {REBUILD}")
        self.variants = layout.variants_in(self.manifest["files"])
        if not self.variants:
            raise BundleError(f"{self.bundle} has no encoder: it was exported with --decoder-only and captions "
                              "features, not images (use demo.onnx_step.OnnxStepModel on it)")
        if variant not in self.variants:
            raise BundleError(f"{self.bundle} has no {variant} encoder (it has: {', '.join(self.variants)}); "
                              + _how_to_get(variant))
        self.decoder_variants = layout.decoder_variants_in(self.manifest["files"])
        if decoder_variant not in self.decoder_variants:
            raise BundleError(f"{self.bundle} has no {decoder_variant} decoder (it has: "
                              f"{', '.join(self.decoder_variants) or 'none'}); {self._why_no_decoder(decoder_variant)}")
        self.variant, self.decoder_variant = variant, decoder_variant
        encoder = layout.encoder_file(variant)
        memory = (layout.get_variant(variant).encoder_memory if self.manifest.get(layout.PADDED_ROWS)
                  else layout.UNPADDED_ENCODER_MEMORY)
        self.encoder, self.provider = create_session(self.bundle / encoder, provider, threads, memory)
        self._check_io(encoder, self.encoder)
        self.decoder = self._decoder()
        if self.decoder.vocab_size != len(self.vocab) or self.decoder.hidden_dim != self.manifest["hidden_size"]:
            raise BundleError(f"{self.bundle / layout.decoder_file(decoder_variant)} has vocabulary "
                              f"{self.decoder.vocab_size} and hidden size {self.decoder.hidden_dim}; the manifest "
                              f"says {len(self.vocab)} and {self.manifest['hidden_size']}: the files come from "
                              f"different exports; {REBUILD}")

    def _why_no_decoder(self, decoder_variant: str) -> str:
        """Why the export left a decoder variant out, as its manifest says; or how to get one."""
        row = layout.VARIANT_BY_NAME.get(decoder_variant)
        if row is None or not row.quantized:  # always exported: a folder with one variant only (a Space), or damaged
            return "choose the one it has (a Space ships one)" if self.decoder_variants else REBUILD
        name, key, default = row.name, row.parity_key("decoder"), layout.DEFAULT_VARIANT
        gate = self.manifest.get("parity", {}).get(key)
        if isinstance(gate, dict) and gate.get("why"):
            return f"the export's {name} decoder failed its gate (manifest parity.{key}: {gate['why']}); " \
                   f"use the {default} decoder"
        if isinstance(gate, dict) and gate.get("shipped"):  # a Space made with --decoder-variant DEFAULT
            return f"its export made one, but this folder was built without it; use the {default} decoder"
        return f"the export ships an {name} decoder with --quantize {name} when its captions match {default}'s; " \
               f"{REBUILD}"

    def _decoder(self) -> OnnxStepModel:
        """The image projection (once per image, one thread) and the top-k step (every step; one thread for a
        small vocabulary, every usable core for a Flickr-sized one: `demo.onnx_step.step_threads`).

        `threads` sizes the encoder only.
        """
        def session(name: str, threads: int):
            created, _ = create_session(self.bundle / name, self.provider, threads=threads)
            self._check_io(name, created)
            return created

        step_file = layout.decoder_file(self.decoder_variant)
        threads = step_threads(self.manifest["vocab_size"], self.manifest["hidden_size"])
        return OnnxStepModel(session(step_file, threads), session(layout.IMAGE_PROJECTION, 1))

    def _check_io(self, name: str, session) -> None:
        inputs, outputs = ([v.name for v in session.get_inputs()], [v.name for v in session.get_outputs()])
        if (inputs, outputs) != layout.GRAPH_IO[name]:
            raise BundleError(f"{self.bundle}: the {name.removesuffix('.onnx')} graph has inputs {inputs} and "
                              f"outputs {outputs}, expected {layout.GRAPH_IO[name]}: it is not from this project's "
                              f"export; {REBUILD}")

    def options(self, config: GenerationConfig = GENERATION, **changes) -> SearchOptions:
        """The search options `config` (with `changes`: field names, as `generate` takes them) gives this bundle's
        vocabulary."""
        return options_for(self.vocab, _with(config, changes))

    def check(self, config: GenerationConfig) -> GenerationConfig:
        """`config` if this bundle's decoder can search it (raises `BadInput` otherwise), before any model work:
        what a server refuses a request for."""
        if config.num_beams > 1:
            require_top_k(self.decoder, 2 * config.num_beams, config.num_beams)
        return config

    def caption(self, images: Sequence[ImageSource], config: GenerationConfig = GENERATION,
                **changes) -> list[CaptionResult]:
        """Caption several images; raises `ImageError` for an image that cannot be decoded."""
        options = self.options(config, **changes)
        started = time.perf_counter()
        pixels = np.stack([load_image(image) for image in images])
        return self.caption_pixels(pixels, options, preprocess_ms=(time.perf_counter() - started) * 1000)

    def caption_pixels(self, pixels: np.ndarray, options: SearchOptions, preprocess_ms: float = 0.0):
        features, encoder_ms = self.encode(pixels)
        return self.caption_features(features, options, {"preprocess": preprocess_ms, "encoder": encoder_ms})

    def encode(self, pixels: np.ndarray) -> tuple[np.ndarray, float]:
        """Features of a batch of preprocessed images, and the encoder's time in ms (the batch's)."""
        started = time.perf_counter()
        features = self.encoder.run([layout.FEATURES], {layout.PIXELS: pixels})[0]
        return features, (time.perf_counter() - started) * 1000

    def compare(self, image: ImageSource, config: GenerationConfig = COMPARED, name: str | None = None,
                **changes) -> Comparison:
        """Greedy and beam search (`config`'s width) for one image on one encoder pass: what the app shows, side
        by side. `name` is what an error message calls the image (a server names the user's file, not its upload
        folder)."""
        config = _with(config, changes)
        started = time.perf_counter()
        pixels = load_image(image, name=name)[None]
        timings = {"preprocess": (time.perf_counter() - started) * 1000}
        features, timings["encoder"] = self.encode(pixels)
        return self.compare_features(features, config, timings)

    def compare_features(self, features: np.ndarray, config: GenerationConfig = COMPARED,
                         timings: dict[str, float] | None = None) -> Comparison:
        """`compare` for one already encoded image (features (1, F)): what a server runs after a shared
        encoder pass (`demo.encoder_batching`), so a batched request is searched exactly as a lone one."""
        timings = timings or {}
        greedy = self.caption_features(features, self.options(config.greedy()), timings)[0]
        beam = self.caption_features(features, self.options(config), timings)[0]
        return Comparison(greedy, beam, config.num_beams, self.provider, self.variant, self.decoder_variant)

    def caption_features(self, features: np.ndarray, options: SearchOptions,
                         timings_ms: dict[str, float]) -> list[CaptionResult]:
        """Search captions for already encoded images: several searches can share one encoder pass."""
        started = time.perf_counter()
        found = generate(self.decoder, features, self.vocab.start_id, self.vocab.end_id, options)
        timings = timings_ms | {"decoder": (time.perf_counter() - started) * 1000}
        return [self._result(n_best, {k: v / len(features) for k, v in timings.items()}) for n_best in found]

    def _result(self, n_best: list[Hypothesis], timings: dict[str, float]) -> CaptionResult:
        candidates = []
        for hypothesis in n_best:
            words = self.vocab.decode(hypothesis.tokens)
            candidates.append(CaptionCandidate(" ".join(words), words, hypothesis.log_prob, hypothesis.score,
                                               hypothesis.finished, list(hypothesis.word_log_probs),
                                               hypothesis.end_log_prob))
        best = candidates[0]
        return CaptionResult(best.caption, best.tokens, best.log_prob, best.score, candidates,
                             {f"{k}_ms_per_image": round(v, 3) for k, v in timings.items()})


def _how_to_get(name: str) -> str:
    """What to do about a variant the bundle lacks: the table's hint, or (a name it does not know) the one there."""
    row = layout.VARIANT_BY_NAME.get(name)
    if row is None or not row.quantized:
        return "choose the one it has (a Space ships one)"
    return f"{row.hint()} for the {name} variant"


def _with(config: GenerationConfig, changes: dict) -> GenerationConfig:
    """`config` with the options given by name; a number where the config goes is the old positional call."""
    if not isinstance(config, GenerationConfig):
        raise TypeError(f"generation options go in a GenerationConfig or by name (num_beams=3), not as "
                        f"{config!r} in position")
    return config.replace(**changes) if changes else config
