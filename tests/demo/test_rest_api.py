"""The HTTP API beside the page (`demo.web.rest`): one request in, one JSON answer out, errors as HTTP statuses.

Answers and errors are checked on the suite's real server (`served_app`), over HTTP as `curl` sends them; the
states a test must set up exactly (loading, a full queue, keys) on the same routes in-process (`TestClient`
runs the real ASGI app with the real bundle), and the keys once more on a real server started with
$CAPTIONER_API_KEYS, where Gradio's own login guards the page.

Slow: servers and the real encoder.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from bench.images import png_header_claiming
from demo.bundle_layout import MANIFEST
from demo.generation import DEFAULTS
from demo.preprocess import ImageError, load_image
from tests.helpers import Drained, assert_same_answer, encoded, free_port, offline_env, wait_for_server

pytestmark = pytest.mark.slow


def example_image() -> Path:
    from demo.web.page import example_images

    return Path(example_images()[0])


@pytest.fixture
def api(served_app: str) -> str:
    """The suite's server once its model is loaded (the page answers before: its requests wait, the API's do not)."""
    wait_healthy(served_app)
    return served_app


def post(url: str, params: dict | None = None, **request) -> httpx.Response:
    return httpx.post(url.rstrip("/") + "/v1/captions", params=params, timeout=60, **request)


def refusal(response: httpx.Response, status: int, error: str) -> str:
    """The JSON error body a refused request gets: the status and code asked for, a message, no traceback."""
    body = response.json()
    assert (response.status_code, set(body), body["error"]) == (status, {"error", "detail"}, error), body
    assert "Traceback" not in response.text
    return body["detail"]


def decode_message(data: bytes, name: str) -> str:
    """What `load_image` itself says of `data`: the API must pass it on unchanged."""
    with pytest.raises(ImageError) as refused:
        load_image(data, name=name)
    return str(refused.value)


def test_a_caption_as_multipart_or_raw_body_is_the_runtimes_answer(api, captioner):
    """The file as the `image` field with options as fields, or as the body with options in the query: the
    answer is what `Captioner` gives for those options (the CLI's JSON for one image; with `compare`, the page's
    greedy and beam side by side)."""
    image = example_image()
    answer = post(api, files={"image": (image.name, image.read_bytes(), "image/png")},
                  data={"num_beams": "3", "num_return_sequences": "2"}).json()
    expected = captioner.caption([image], num_beams=3, num_return_sequences=2)[0]
    (row,) = answer["images"]
    assert (row["image"], row["caption"]) == (image.name, expected.caption)
    assert [c["caption"] for c in row["candidates"]] == [c.caption for c in expected.candidates]
    assert row["word_log_probs"] == pytest.approx(expected.word_log_probs, abs=1e-5)
    assert (answer["variant"], answer["decoder_variant"], answer["encoder_batch"]) == ("fp32", "fp32", 1)
    compared = post(api, {"compare": "true"}, content=image.read_bytes(),
                    headers={"Content-Type": "image/png"}).json()
    assert_same_answer(compared, captioner.compare(image))
    int8 = post(api, {"variant": "int8"}, content=image.read_bytes()).json()
    assert int8["variant"] == "int8" and int8["images"][0]["caption"]


def test_every_refusal_is_json_with_the_status_that_says_why(api, captioner):
    image = example_image()
    photo = Image.open(image).convert("RGB")
    bad = {"notes.txt": b"not an image at all", "cut.jpg": encoded(photo, "JPEG")[:200],
           "bomb.png": png_header_claiming(30_000, 30_000)}
    for name, data in bad.items():
        detail = refusal(post(api, files={"image": (name, data)}), 400, "bad_image")
        assert detail == decode_message(data, name)
    widest = captioner.decoder.top_k // 2
    for options, says in (({"num_beams": widest + 1}, f"num_beams <= {widest}"),
                          ({"max_length": 0}, "max_length must be at least 1"),
                          ({"max_length": DEFAULTS.max_served_length + 1}, "at most"),
                          ({"num_beams": "three"}, "whole number"), ({"beams": 3}, "unknown option beams"),
                          ({"variant": "fp16"}, "not in this bundle"), ({"compare": "maybe"}, "true or false")):
        assert says in refusal(post(api, options, content=image.read_bytes()), 422, "bad_options")
    refusal(post(api, content=b""), 400, "bad_image")
    refusal(httpx.get(api + "v1/nothing-here"), 404, "not_found")


def test_an_upload_over_the_limit_is_refused_before_its_body_is_sent(api):
    """413 from the Content-Length alone: the server answers without waiting for (or reading) the body."""
    address = urlsplit(api)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.putrequest("POST", "/v1/captions")
    for header, value in (("Content-Type", "image/jpeg"), ("Content-Length", "2000000000")):
        connection.putheader(header, value)
    connection.endheaders()  # and not one byte of the body
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"] == "too_large"
    connection.close()


def test_model_health_and_docs_describe_the_loaded_bundle(api, captioner, exported_run):
    bundle = exported_run / "onnx"
    assert httpx.get(api + "healthz").json()["status"] == "ok"
    model = httpx.get(api + "v1/model").json()
    assert model["bundle_sha256"] == hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()
    assert (model["vocab_size"], model["max_num_beams"], model["provider"]) == \
        (len(captioner.vocab), captioner.decoder.top_k // 2, captioner.provider)
    assert model["variants"] == ["fp32", "int8"] and model["summary"]
    paths = httpx.get(api + "v1/openapi.json").json()["paths"]
    assert {"/captions", "/model"} <= set(paths)
    assert httpx.get(api + "v1/docs").status_code == 200


def in_process(bundle: Path, keys: tuple[str, ...] = (), workers: int = 2, max_queue: int = 0, load: bool = True):
    """The server's routes on a real pool and queue, in this process: states a test sets up exactly."""
    from fastapi.testclient import TestClient
    from starlette.applications import Starlette

    from demo.captioner_pool import CaptionerPool
    from demo.request_queue import RequestQueue
    from demo.web import rest

    pool = CaptionerPool(bundle, provider="cpu", max_batch_size=2, load=load)
    requests = RequestQueue(workers, max_queue)
    return TestClient(Starlette(routes=rest.routes(pool, requests, keys))), pool, requests


def test_health_says_not_yet_until_the_model_is_loaded_and_warmed_up(exported_run):
    client, pool, _ = in_process(exported_run / "onnx", load=False)
    image = example_image().read_bytes()
    for response in (client.get("/healthz"), client.post("/v1/captions", content=image)):
        refusal(response, 503, "loading")
        assert int(response.headers["Retry-After"]) > 0
    pool.load()
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/captions", content=image).status_code == 200


def test_a_full_queue_refuses_at_once_page_and_api_alike_and_keys_guard_the_api(exported_run):
    """With every place taken (a ticket held, as an admitted request holds one), an API request gets 503 with
    Retry-After and a page request the same refusal, both without model work; once the place is free both are
    answered. With keys, a request without a valid one is refused (401) before it takes a place."""
    from demo.generation import COMPARED
    from demo.web.page import caption_or_explain

    client, pool, requests = in_process(exported_run / "onnx", keys=("key-one", "key-two"), workers=1)
    image, passes = example_image(), sum(pool.batcher(*pool.default_pair()).passes.values())
    good = {"Authorization": "Bearer key-two"}
    held = requests.admit()
    response = client.post("/v1/captions", content=image.read_bytes(), headers=good)
    assert "busy" in refusal(response, 503, "busy") and int(response.headers["Retry-After"]) >= 1
    with pytest.raises(Exception, match="the server is busy"):  # what the page shows
        caption_or_explain(pool, str(image), COMPARED.to_dict(), "fp32", "fp32", requests)
    for headers in ({}, {"Authorization": "Bearer key-three"}, {"Authorization": "key-one"}):
        response = client.post("/v1/captions", content=image.read_bytes(), headers=headers)
        refusal(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert sum(pool.batcher(*pool.default_pair()).passes.values()) == passes, "no refused request was encoded"
    held.cancel()
    assert client.post("/v1/captions", content=image.read_bytes(), headers=good).status_code == 200
    assert caption_or_explain(pool, str(image), COMPARED.to_dict(), "fp32", "fp32", requests)["greedy"]
    assert client.get("/healthz").status_code == 200, "the health check needs no key"
    assert requests.held() == 0 and requests.refused == 2


def test_keys_from_the_environment_guard_a_real_servers_api_and_its_page(exported_run, tmp_path):
    """`CAPTIONER_API_KEYS` on a real server: the API wants a bearer key, the page and its `caption` endpoint
    Gradio's login with a key as password (gradio_client's `auth`), the health check is open."""
    from gradio_client import Client, handle_file

    port = free_port()
    command = [sys.executable, "-m", "demo", "serve", "--model", str(exported_run / "onnx"), "--port", str(port)]
    url = f"http://127.0.0.1:{port}/"
    process, _ = wait_for_server(command, url, env=offline_env(CAPTIONER_API_KEYS="alpha, beta"))
    server = Drained(process)
    try:
        image = example_image()
        refusal(post(url, content=image.read_bytes()), 401, "unauthorized")
        wait_healthy(url)
        assert post(url, content=image.read_bytes(), headers={"Authorization": "Bearer beta"}).status_code == 200
        with pytest.raises(Exception):
            Client(url, verbose=False)
        answer = Client(url, auth=("anyone", "alpha"), verbose=False).predict(handle_file(str(image)),
                                                                              api_name="/caption")
        assert answer["greedy"]["caption"]
        assert httpx.get(url + "config").status_code == 401, "the page's config wants the login"
    finally:
        output = server.stop()
    assert "2 API key(s) required" in output and "alpha" not in output


def wait_healthy(url: str, within_s: float = 120) -> None:
    import time

    deadline = time.monotonic() + within_s
    while httpx.get(url + "healthz").status_code != 200:
        assert time.monotonic() < deadline, f"{url}healthz not 200 within {within_s} s"
        time.sleep(0.2)
