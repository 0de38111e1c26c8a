"""The plain HTTP API beside the page: `POST /v1/captions`, `GET /v1/model`, `GET /healthz`, docs at `/v1/docs`.

One request in, one JSON answer out. It runs in the page's own server (mounted on Gradio's FastAPI app through
`routes`), on the page's `CaptionerPool` and `RequestQueue`: API and page requests share encoder passes and one
bound on what the server holds. Every error is `{"error": CODE, "detail": MESSAGE}` with the status that says
what went wrong (400 an image that does not decode, 401 no valid key, 413 over the upload limit, 422 bad options,
503 busy or not loaded, with Retry-After), never a traceback.

The image comes as a multipart field `image` (options as further fields or in the query string) or as the raw
request body (options in the query string). The options are `GenerationConfig`'s fields under their names, with
the CLI's defaults, plus `variant`, `decoder_variant`, `compare` (greedy and beam side by side, the page's
answer) and `explain` (each caption's occlusion maps, `demo.occlusion`). Without `compare` the answer has
`python -m demo caption --json`'s schema, for one image.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Mount, Route

from demo.bundle_layout import DEFAULT_VARIANT, MANIFEST, preferred
from demo.captioner_pool import CannotCaption, CaptionerPool, StillLoading, add_explanations
from demo.errors import BadInput, CaptionerError
from demo.generation import COMPARED, DEFAULTS, GENERATION, GenerationConfig, check_served, field_names, field_type
from demo.model_card import read_model_card
from demo.preprocess import ImageError
from demo.request_queue import Busy, RequestQueue
from demo.web.upload import MAX_UPLOAD_BYTES

PREFIX, HEALTH = "/v1", "/healthz"
FORM_OVERHEAD = 64 * 1024  # a multipart body's boundaries and option fields, beyond the image's own bytes
ROUTE_OPTIONS = ("variant", "decoder_variant", "compare", "explain")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
LOADING_RETRY_S = 5
log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than 200: its status, a short code, the message a user reads, extra headers."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "detail": self.detail}, self.status, self.headers)


@dataclass(frozen=True)
class Asked:
    """One request's options: the search, which variants, greedy beside beam or not."""

    config: GenerationConfig
    variant: str
    decoder_variant: str
    compare: bool
    explain: bool  # each caption's occlusion maps in the answer (`demo.occlusion`)


def routes(pool: CaptionerPool, requests: RequestQueue, keys: tuple[str, ...] = ()) -> list[BaseRoute]:
    """The routes to put before Gradio's on its app (`launch(app_kwargs={"routes": ...})`)."""
    return [Route(HEALTH, health_endpoint(pool), methods=["GET"]), Mount(PREFIX, app=rest_app(pool, requests, keys))]


def health_endpoint(pool: CaptionerPool) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def health(request: Request) -> JSONResponse:
        """200 once the bundle is loaded and a warm-up caption has run; 503 before, or if it failed to load."""
        try:
            pool.usable(wait=False)
        except CaptionerError as exc:
            return _refusal(exc).response()
        return JSONResponse({"status": "ok", "model": str(pool.bundle)})
    return health


def rest_app(pool: CaptionerPool, requests: RequestQueue, keys: tuple[str, ...] = ()) -> FastAPI:
    api = FastAPI(title="VGG16 + LSTM captioner", summary="Captions for images: greedy or beam search on ONNX "
                  "Runtime, per-word log-probabilities.", version="1", docs_url="/docs", redoc_url=None)
    threads = anyio.CapacityLimiter(requests.capacity)  # admitted requests only: refusals take no thread

    @api.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": "not_found" if exc.status_code == 404 else "http_error", "detail": exc.detail},
                            exc.status_code, getattr(exc, "headers", None))

    @api.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal", "detail": f"the server failed ({type(exc).__name__}); its log "
                             "has the details"}, 500)

    @api.post("/captions", responses=_ERRORS)
    async def captions(request: Request) -> JSONResponse:
        """Caption one image: multipart field `image` or the raw body; options as fields or query parameters
        (`num_beams`, `max_length`, `length_penalty`, `num_return_sequences`, `no_repeat_ngram_size`, `variant`,
        `decoder_variant`, `compare`, `explain`)."""
        _authorize(request, keys)
        _ready(pool)
        ticket = _admit(requests)
        try:
            image, name, given = await _read(request)
            # in a thread: a pair asked for the first time loads its sessions, which must not stall the loop
            asked = await anyio.to_thread.run_sync(lambda: _options(pool, given), limiter=threads)
        except BaseException:
            ticket.cancel()
            raise
        try:
            answer = await anyio.to_thread.run_sync(lambda: ticket.run(lambda: _caption(pool, image, name, asked)),
                                                    limiter=threads)
        except CaptionerError as exc:
            raise _refusal(exc) from None
        return JSONResponse(answer)

    @api.get("/model", responses=_ERRORS)
    async def model(request: Request) -> JSONResponse:
        """What is loaded: the card's summary, vocabulary, variants, provider, the bundle's hash, the limits."""
        _authorize(request, keys)
        _ready(pool)
        return JSONResponse(_model_summary(pool))

    return api


_ERRORS = {status: {"description": text, "content": {"application/json": {"example": {"error": code,
                                                                                       "detail": "..."}}}}
           for status, code, text in ((400, "bad_image", "the image does not decode"),
                                      (401, "unauthorized", "no valid key (Authorization: Bearer KEY)"),
                                      (413, "too_large", "the upload is over the limit"),
                                      (422, "bad_options", "an option is unknown or out of range"),
                                      (503, "busy", "queue full, or the model not loaded yet: see Retry-After"))}


def _authorize(request: Request, keys: tuple[str, ...]) -> None:
    if not keys:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # every key compared, in constant time: the answer's timing says nothing about how close a guess was
    if scheme.lower() != "bearer" or not sum(hmac.compare_digest(given.strip(), key) for key in keys):
        raise ApiError(401, "unauthorized", "a valid API key is needed: send `Authorization: Bearer KEY`",
                       {"WWW-Authenticate": "Bearer"})


def _ready(pool: CaptionerPool) -> None:
    try:
        pool.usable(wait=False)
    except CaptionerError as exc:
        raise _refusal(exc) from None


def _admit(requests: RequestQueue):
    try:
        return requests.admit()
    except Busy as exc:
        raise _refusal(exc) from None


async def _read(request: Request) -> tuple[bytes, str, dict[str, str]]:
    """The image's bytes, its name for messages, and the options given (query string and form fields); 413 as
    soon as the body is known to be over the limit, from its Content-Length or while it streams in."""
    form = request.headers.get("content-type", "").startswith("multipart/form-data")
    limit = MAX_UPLOAD_BYTES + (FORM_OVERHEAD if form else 0)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(int(length))
    limited = Request(request.scope, _limited(request.receive, limit))
    given = _single(request.query_params.multi_items(), "query parameter")
    if not form:
        return await limited.body(), "the request body", given
    try:
        fields = await limited.form(max_files=1, max_fields=len(field_names()) + len(ROUTE_OPTIONS))
    except HTTPException as exc:  # the multipart parser's own refusals (too many fields, malformed)
        raise ApiError(400, "bad_request", f"the multipart body cannot be read: {exc.detail}") from None
    image = fields.get("image")
    if image is None or isinstance(image, str):
        raise ApiError(400, "no_image", "no image: send the file as the multipart field `image` (or the raw "
                                        "image as the request body)")
    items = [(k, v) for k, v in fields.multi_items() if k != "image"]
    if any(not isinstance(v, str) for _, v in items):
        raise ApiError(400, "bad_request", "one image per request: only the field `image` may hold a file")
    both = given.keys() & {k for k, _ in items}
    if both:
        raise ApiError(422, "bad_options", f"{', '.join(sorted(both))} given both in the query and in the form")
    return await image.read(), image.filename or "image", given | _single(items, "form field")


def _limited(receive, limit: int):
    """`receive` that refuses (413) a body over `limit` bytes as it arrives: a body without Content-Length
    (chunked) is not read in full either."""
    seen = 0

    async def receive_limited():
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _too_large(seen, streamed=True)
        return message
    return receive_limited


def _too_large(size: int, streamed: bool = False) -> ApiError:
    what = "the body is already" if streamed else "the body is"
    return ApiError(413, "too_large", f"{what} {size} bytes; the upload limit is {MAX_UPLOAD_BYTES // 2**20} MB "
                                      "for the image: send a smaller one")


def _single(items, where: str) -> dict[str, str]:
    given: dict[str, str] = {}
    for key, value in items:
        if key in given:
            raise ApiError(422, "bad_options", f"{key} given twice as a {where}")
        given[key] = value
    return given


def _options(pool: CaptionerPool, given: dict[str, str]) -> Asked:
    """The request's options, checked against the config's rules and this bundle, before any model work."""
    known = (*field_names(), *ROUTE_OPTIONS)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ApiError(422, "bad_options", f"unknown option {', '.join(unknown)} (options: {', '.join(known)})")
    compare, explain = (_flag(name, given.get(name, "false")) for name in ("compare", "explain"))
    variant = _variant(given.get("variant", preferred(pool.variants)), pool.variants, "variant")
    decoder_variant = _variant(given.get("decoder_variant", preferred(pool.decoder_variants)),
                               pool.decoder_variants, "decoder_variant")
    values = {name: _value(name, given[name]) for name in field_names() if name in given}
    try:
        config = (COMPARED if compare else GENERATION).replace(**values)
        pool.get(variant, decoder_variant).check(check_served(config))
    except BadInput as exc:
        raise ApiError(422, "bad_options", str(exc)) from None
    return Asked(config, variant, decoder_variant, compare, explain)


def _value(name: str, text: str):
    if name == "max_length" and text.strip().lower() in ("", "none"):
        return None  # the vocabulary's
    kind = field_type(name)
    try:
        return kind(text)
    except ValueError:
        raise ApiError(422, "bad_options", f"{name} must be {'a whole number' if kind is int else 'a number'}, "
                                           f"not {text!r}") from None


def _flag(name: str, text: str) -> bool:
    if text.strip().lower() not in TRUE + FALSE:
        raise ApiError(422, "bad_options", f"{name} must be true or false, not {text!r}")
    return text.strip().lower() in TRUE


def _variant(name: str, available: list[str], option: str) -> str:
    if name not in available:
        raise ApiError(422, "bad_options", f"{option} {name!r} is not in this bundle (it has: "
                                           f"{', '.join(available) or DEFAULT_VARIANT})")
    return name


def _caption(pool: CaptionerPool, image: bytes, name: str, asked: Asked) -> dict:
    """The answer, in a worker slot: `Comparison.to_dict` with `compare`, else the CLI's `--json` document."""
    if not image:
        raise ImageError(f"{name}: is empty: send the image's bytes")
    encoded = pool.encode(image, asked.variant, asked.decoder_variant, name=name)
    captioner = encoded.captioner
    if asked.compare:
        answer = captioner.compare_features(encoded.features, asked.config, encoded.timings).to_dict(
            encoded.encoder_batch)
        captions = [answer["greedy"], answer["beam"]]
    else:
        result = captioner.caption_features(encoded.features, captioner.options(asked.config), encoded.timings)[0]
        answer = {"provider": captioner.provider, "variant": captioner.variant,
                  "decoder_variant": captioner.decoder_variant, "encoder_batch": encoded.encoder_batch,
                  "images": [{"image": name, **result.to_dict()}]}
        captions = answer["images"]
    if asked.explain:
        add_explanations(encoded, captions)
    return answer


def _refusal(exc: CaptionerError) -> ApiError:
    """A user-fixable error as its HTTP answer."""
    if isinstance(exc, Busy):
        return ApiError(503, "busy", str(exc), {"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, StillLoading):
        return ApiError(503, "loading", str(exc), {"Retry-After": str(LOADING_RETRY_S)})
    if isinstance(exc, CannotCaption):
        return ApiError(503, "no_model", str(exc).replace("**", "").replace("`", ""))
    if isinstance(exc, ImageError):
        return ApiError(400, "bad_image", str(exc))
    if isinstance(exc, BadInput):
        return ApiError(422, "bad_options", str(exc))
    return ApiError(503, "model_unavailable", str(exc))


def _model_summary(pool: CaptionerPool) -> dict:
    captioner = pool.get(*pool.default_pair())
    card = read_model_card(pool.bundle)
    return {"summary": card.plain_summary if card else None,
            "bundle": str(pool.bundle),
            "bundle_sha256": hashlib.sha256((pool.bundle / MANIFEST).read_bytes()).hexdigest(),
            "vocab_size": len(captioner.vocab), "max_length": captioner.vocab.max_length,
            "max_served_length": DEFAULTS.max_served_length, "max_num_beams": captioner.decoder.top_k // 2,
            "variants": pool.variants, "decoder_variants": pool.decoder_variants,
            "default_variant": captioner.variant, "default_decoder_variant": captioner.decoder_variant,
            "provider": captioner.provider, "generation_defaults": GENERATION.to_dict(),
            "compare_defaults": COMPARED.to_dict()}
