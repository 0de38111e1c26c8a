"""`CaptionerPool`: the loaded models a server shares between its page and its HTTP API.

One Captioner per (encoder variant, decoder variant), created on first use; with `max_batch_size` > 1 each has
an `EncoderBatcher`, so concurrent requests (page or API alike) share encoder passes. A server starts listening
before the bundle is loaded (`load(background=True)`), so that its health check can say "not yet" instead of the
port refusing connections; `ready()` says when the default pair is loaded and a warm-up caption has run.
No Gradio here: the page (`demo.web.page`) and the API (`demo.web.rest`) both use it.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demo.bundle_layout import (
    DEFAULT_VARIANT,
    IMAGE_PROJECTION,
    VOCAB,
    decoder_variants_in,
    preferred,
    runtime_files,
    variants_in,
)
from demo.captioner import Captioner
from demo.encoder_batching import EncoderBatcher
from demo.errors import BadInput, CaptionerError
from demo.generation import COMPARED, DEFAULTS, GenerationConfig, check_served
from demo.manifest import BundleError, verify_bundle, verify_files
from demo.occlusion import explain_caption, occluded_features
from demo.preprocess import IMAGE_SIZE, ImageSource, load_image
from demo.sessions import ProviderError, create_session
from demo.vocab import Vocabulary, VocabularyError

NO_MODEL = ("**No model bundle at `{bundle}`.** Build the default one with `make demo` (or train a run and "
            "`python -m export --run RUN`), then start the app again. Details: {why}")
LOAD_WAIT_S = 600  # how long a page request waits for the bundle to load before it is refused
log = logging.getLogger(__name__)


class CannotCaption(CaptionerError):
    """A request the server cannot answer: no bundle loaded, or no image given."""


class StillLoading(CaptionerError):
    """The bundle is still being checked and loaded: ask again in a few seconds."""


@dataclass
class Encoded:
    """One request's image after its (possibly shared) encoder pass: what either search needs."""

    captioner: Captioner
    pixels: np.ndarray  # (224, 224, 3): what an explanation hides regions of
    features: np.ndarray  # (1, F)
    timings: dict[str, float]  # preprocess and encoder, ms
    encoder_batch: int  # images in the encoder pass (1: it ran alone)


class CaptionerPool:
    """The bundle's captioners, shared by all requests; `load` checks the bundle and warms the default pair."""

    def __init__(self, bundle: Path, provider: str = "auto", max_batch_size: int = 1, load: bool = True):
        self.bundle, self.provider, self.max_batch_size = Path(bundle), provider, max_batch_size
        self._loaded: dict[tuple[str, str], Captioner] = {}
        self._batchers: dict[tuple[str, str], EncoderBatcher] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.error: str | None = None
        self.variants: list[str] = []
        self.decoder_variants: list[str] = []
        try:  # sizes only: what the page is built from; every sha256 is checked by `load`
            self.manifest = verify_bundle(self.bundle, check_hashes=False)
            self.variants = variants_in(self.manifest["files"])
            self.decoder_variants = decoder_variants_in(self.manifest["files"])
        except (BundleError, OSError) as exc:
            self._fail(exc)
        if load:
            self.load()

    def load(self, background: bool = False) -> None:
        """Check every file's sha256, load the default pair and run one caption on it (its first run allocates
        what later ones reuse). A broken bundle is recorded in `error` (the page and the API show it). A provider
        error is raised; in the `background`, where nothing would catch it, it is recorded and logged too."""
        if background:
            threading.Thread(target=self._load_recording_all, name="bundle-load", daemon=True).start()
            return
        if self._done.is_set():
            return
        started = time.perf_counter()
        try:
            self.manifest = verify_bundle(self.bundle)
            captioner = self.get(*self.default_pair())
            captioner.compare(np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 128, np.uint8), COMPARED)
            log.info("model loaded and warmed up in %.1f s: %s", time.perf_counter() - started, self.bundle)
        except (BundleError, VocabularyError, OSError) as exc:
            self._fail(exc)
        finally:
            self._done.set()

    def check_provider(self) -> None:
        """Raise `ProviderError` (or `BadInput` for an unknown name) now if the provider cannot run here: a server
        must stop at start for that, not report it later. One small session (the image projection) is enough."""
        if self.error is None:
            try:
                create_session(self.bundle / IMAGE_PROJECTION, self.provider, threads=1)
            except (ProviderError, BadInput):
                raise
            except Exception:  # noqa: BLE001 - a damaged file: `load` names it after checking its sha256
                pass

    def _load_recording_all(self) -> None:
        try:
            self.load()
        except Exception as exc:  # noqa: BLE001 - a server thread: shown by /healthz, the page and the log
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.variants, self.decoder_variants, self.error = [], [], str(exc)
        self._done.set()
        log.warning("no model: %s", exc)

    def ready(self) -> bool:
        """Whether requests can be answered now: loaded, warmed up, no error."""
        return self._done.is_set() and self.error is None

    def loading(self) -> bool:
        return not self._done.is_set()

    def max_length(self) -> int:
        """What `max_length=None` means for this bundle: its vocabulary's longest training caption (read from
        `vocab.json`, so the page can be built before the models load)."""
        if self.error is None:
            try:
                return Vocabulary.load(self.bundle / VOCAB).max_length
            except (VocabularyError, OSError) as exc:
                self._fail(exc)
        return DEFAULTS.max_length_without_vocabulary

    def default_pair(self) -> tuple[str, str]:
        """The (encoder, decoder) variants the page starts with: the table's default where the bundle has it."""
        return preferred(self.variants), preferred(self.decoder_variants)

    def get(self, variant: str, decoder_variant: str = DEFAULT_VARIANT) -> Captioner:
        key = (variant, decoder_variant)
        with self._lock:
            if key not in self._loaded:  # every file's sha256 was checked once, by `load`; sizes again here
                if self._loaded:  # a pair first asked for later: its files may have been replaced since
                    self._verify_again(variant, decoder_variant)
                self._loaded[key] = Captioner(self.bundle, provider=self.provider, variant=variant,
                                              decoder_variant=decoder_variant, check_hashes=False)
                if self.max_batch_size > 1:
                    encode = self._loaded[key].encode
                    self._batchers[key] = EncoderBatcher(lambda pixels: encode(pixels)[0], self.max_batch_size)
            return self._loaded[key]

    def batcher(self, variant: str, decoder_variant: str = DEFAULT_VARIANT) -> EncoderBatcher | None:
        """The pair's encoder batcher (None when batching is off); `get` first, which loads the pair."""
        return self._batchers.get((variant, decoder_variant))

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

    def usable(self, wait: bool) -> None:
        """Raise unless the pool can answer: `StillLoading` (or, with `wait`, block until loaded), `CannotCaption`
        for a bundle that failed to load."""
        if wait:
            self._done.wait(LOAD_WAIT_S)
        if self.loading():
            raise StillLoading(f"the model at {self.bundle} is still loading; try again in a few seconds")
        if self.error:
            raise CannotCaption(NO_MODEL.format(bundle=self.bundle, why=self.error))

    def encode(self, image: ImageSource, variant: str, decoder_variant: str = DEFAULT_VARIANT,
               name: str | None = None) -> Encoded:
        """Decode one request's image (a bad one fails here, in its own request only) and encode it, sharing the
        pass with concurrent requests when batching is on."""
        captioner, batcher = self.get(variant, decoder_variant), self.batcher(variant, decoder_variant)
        started = time.perf_counter()
        pixels = load_image(image, name=name)
        timings = {"preprocess": (time.perf_counter() - started) * 1000}
        if batcher is None:
            features, timings["encoder"] = captioner.encode(pixels[None])
            return Encoded(captioner, pixels, features, timings, 1)
        encoded = batcher.encode(pixels)
        timings["encoder"] = encoded.encoder_ms
        return Encoded(captioner, pixels, encoded.features, timings, encoded.batch_size)


def run_caption(pool: CaptionerPool, image: ImageSource | None, config: GenerationConfig, variant: str,
                decoder_variant: str = DEFAULT_VARIANT, wait: bool = True, explain: bool = False) -> dict:
    """Greedy and beam results for one image, as `Comparison.to_dict` (what the page's API returns); with
    `explain`, each side's caption has its occlusion maps (`add_explanations`).

    `image` is the upload undecoded (see `demo.web.upload`), so `load_image` alone decides what is an image.
    """
    pool.usable(wait)
    if image is None:
        raise CannotCaption("upload an image first (or pick an example)")
    pool.get(variant, decoder_variant).check(check_served(config))
    encoded = pool.encode(image, variant, decoder_variant, name=upload_name(image))
    comparison = encoded.captioner.compare_features(encoded.features, config, encoded.timings)
    answer = comparison.to_dict(encoded.encoder_batch)
    if explain:
        add_explanations(encoded, [answer["greedy"], answer["beam"]])
    return answer


def add_explanations(encoded: Encoded, captions: list[dict]) -> None:
    """Each caption (a `CaptionResult.to_dict`) gets `explanation`: its words' occlusion maps
    (`demo.occlusion`), from one set of hidden versions of the image shared by all of them."""
    hidden = occluded_features(encoded.captioner, encoded.pixels)
    for caption in captions:
        caption["explanation"] = explain_caption(encoded.captioner, hidden, caption["tokens"]).to_dict()


def upload_name(image: ImageSource) -> str | None:
    """The uploaded file's own name for error messages (the folder is the server's upload cache)."""
    return Path(image).name if isinstance(image, (str, os.PathLike)) else None
