"""The HTTP API (`POST /v1/captions`) on the batched server `serving_load` starts, beside its Gradio API.

Three measurements, on the same server and images as the Gradio rows:
- one caller: the REST request's p50 against `Captioner.compare` in this process on the same image and options,
  taking turns (what HTTP, the upload, the queue, the batcher and the server's allocator add to the model);
- 8 callers: requests/s over REST against the same load through gradio_client (the Gradio rows' figure);
- a storm: 16 concurrent clients, one request in ten bad (a truncated JPEG, a text file, a 30,000 x 30,000 PNG
  header, an option out of range, no key), each status counted; every good answer compared with the same
  request's answer alone, every bad one with the status it must get; the server must still be up after it.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.decoding import MAX_WORDS
from bench.images import png_header_claiming
from demo.generation import COMPARED

API_KEY = "bench-key"  # the servers are started with it: the storm's keyless requests must be refused
STORM_CLIENTS = 16
OPTIONS = {"compare": "true", "num_beams": COMPARED.num_beams, "max_length": MAX_WORDS,
           "length_penalty": COMPARED.length_penalty, "num_return_sequences": 1}  # what serving_load.call asks
TIMING_KEYS = ("encoder_ms", "encoder_batch", "timings_ms")


def without_timings(answer: dict) -> dict:
    return {k: without_timings(v) if isinstance(v, dict) else v for k, v in answer.items() if k not in TIMING_KEYS}


def rest_call(client: httpx.Client, url: str, image: Path, options: dict | None = None,
              key: str | None = API_KEY, data: bytes | None = None) -> tuple[float, httpx.Response]:
    """One `POST /v1/captions` (the image as the multipart field `image`); its latency in seconds and answer."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = image.read_bytes() if data is None else data
    started = time.perf_counter()
    response = client.post(url + "v1/captions", params=OPTIONS if options is None else options,
                           files={"image": (image.name, body, "image/jpeg")}, headers=headers, timeout=120)
    return time.perf_counter() - started, response


def one_caller(url: str, bundle: Path, variant: str, images: list[Path], rounds: int) -> dict:
    """REST p50 / in-process `Captioner.compare` p50 on the same images, a pair of each in turn, the second of
    each pair timed: the first after a switch pays for the other process's ONNX Runtime threads, still spinning
    (a few ms), which is this benchmark's doing, not either side's cost."""
    from demo.captioner import Captioner  # lazy: the other rows need no ONNX Runtime session in this process

    captioner = Captioner(bundle, variant=variant)
    config = COMPARED.replace(max_length=MAX_WORDS, num_return_sequences=1)
    rest, local = [], []
    with httpx.Client() as client:
        for i in range(rounds):
            image = images[i % len(images)]
            for _ in range(2):
                started = time.perf_counter()
                captioner.compare(image, config)
            local.append(time.perf_counter() - started)
            for _ in range(2):
                seconds, response = rest_call(client, url, image)
                response.raise_for_status()
            rest.append(seconds)
    p50_rest, p50_local = (float(np.percentile(x, 50)) * 1000 for x in (rest, local))
    return {"rounds": rounds, "rest_p50_ms": p50_rest, "compare_p50_ms": p50_local, "ratio": p50_rest / p50_local}


def callers(url: str, images: list[Path], count: int, per_caller: int, alone: dict[Path, dict]) -> dict:
    """`count` threads, each its own connection, sending good requests one after another."""
    latencies, batches, errors, differ = [], [], [], []
    lock = threading.Lock()

    def caller(index: int) -> None:
        with httpx.Client() as client:
            for i in range(per_caller):
                image = images[(index * per_caller + i) % len(images)]
                seconds, response = rest_call(client, url, image)
                with lock:
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                        continue
                    latencies.append(seconds)
                    batches.append(response.json()["encoder_batch"])
                    if without_timings(response.json()) != without_timings(alone[image]):
                        differ.append(image.name)

    wall = run_threads(caller, count)
    return {"callers": count, "requests": count * per_caller, "errors": len(errors), "error_samples": errors[:3],
            "throughput_per_s": len(latencies) / wall, "p50_ms": float(np.percentile(latencies, 50)) * 1000,
            "mean_encoder_batch": float(np.mean(batches)), "differ_from_alone": len(differ)}


def storm(url: str, images: list[Path], requests: int, alone: dict[Path, dict], alive: Callable[[], bool],
          folder: Path) -> dict:
    """`requests` from `STORM_CLIENTS` concurrent clients, every tenth a bad one (the kinds in turn)."""
    bad = _bad_kinds(images[0], folder)
    statuses: Counter[str] = Counter()
    wrong, unlike, failed = [], [], []
    lock = threading.Lock()
    per_client = max(1, requests // STORM_CLIENTS)

    def client_loop(index: int) -> None:
        with httpx.Client() as client:
            for i in range(per_client):
                n = index * per_client + i
                image = images[n % len(images)]
                kind, arguments, wanted = bad[(n // 10) % len(bad)] if n % 10 == 9 else ("good", {}, 200)
                try:
                    _, response = rest_call(client, url, image, **arguments)
                except httpx.HTTPError as exc:
                    with lock:
                        failed.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                with lock:
                    statuses[str(response.status_code)] += 1
                    if response.status_code != wanted and response.status_code != 503:
                        wrong.append(f"{kind}: {response.status_code} {response.text[:160]}")
                    elif kind == "good" and response.status_code == 200 and \
                            without_timings(response.json()) != without_timings(alone[image]):
                        unlike.append(image.name)

    wall = run_threads(client_loop, STORM_CLIENTS)
    server_errors = sum(n for status, n in statuses.items() if status.startswith("5") and status != "503")
    return {"clients": STORM_CLIENTS, "requests": per_client * STORM_CLIENTS, "seconds": wall,
            "statuses": dict(sorted(statuses.items())), "connection_failures": len(failed),
            "failure_samples": failed[:3], "wrong_status": len(wrong), "wrong_samples": wrong[:3],
            "server_errors_not_503": server_errors, "good_unlike_alone": len(unlike), "server_alive": alive()}


def _bad_kinds(image: Path, folder: Path) -> list[tuple[str, dict, int]]:
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = image.read_bytes()
    with Image.open(image) as opened:
        width = opened.width
    return [("truncated_jpeg", {"data": jpeg[:len(jpeg) // 3]}, 400),
            ("text_file", {"data": b"a caption is not an image\n" * 40}, 400),
            ("png_bomb_header", {"data": png_header_claiming(30_000, 30_000)}, 400),
            ("option_out_of_range", {"options": OPTIONS | {"num_beams": 10 * width}}, 422),
            ("no_key", {"key": None}, 401)]


def run_threads(target: Callable[[int], None], count: int) -> float:
    """`target(0)` ... `target(count - 1)` in as many threads at once; the seconds until all are done."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
