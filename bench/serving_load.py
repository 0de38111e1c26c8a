"""The real server under load: throughput and p95 latency for 1, 4 and 8 concurrent `gradio_client` callers.

`python -m demo serve` runs in its own process on a loopback port, as a user
starts it, once per encoder variant on a bundle holding that variant alone
(the bundle `python -m export.space` ships), so its memory is that variant's.
Each caller is a thread with its own Client sending Flickr-sized JPEGs to the
`caption` endpoint (greedy and beam 3, one encoder pass) one after another.
Also measured: the server's cold start (process start to the first caption
answered) and its peak RSS (VmHWM) after all the load.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.decoding import MAX_WORDS
from bench.images import photo_like_jpegs
from bench.machine import peak_rss_mib
from demo import bundle_layout as layout
from demo.generation import DEFAULTS
from train.run_files import RunFiles

CALLERS = (1, 4, 8)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m demo serve` in a child process; `cold_start_s` once the first caption came back."""

    def __init__(self, bundle: Path, first_image: Path, variant: str):
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/"
        started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "demo", "serve", "--model", str(bundle),
                                         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_up(started + 180)
        self.variant = variant
        call(self.client(), first_image, variant)
        self.cold_start_s = time.perf_counter() - started

    def _wait_until_up(self, deadline: float) -> None:
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`python -m demo serve` exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.url} did not answer in time")

    def client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def call(client, image: Path, variant: str) -> tuple[float, float]:
    """One caption request; returns its latency in seconds and the ms the server says the model took.

    The difference is what HTTP, the upload and Gradio's queue cost on top of the model.
    """
    from gradio_client import handle_file

    started = time.perf_counter()
    result = client.predict(handle_file(str(image)), DEFAULTS.compared_num_beams, MAX_WORDS, DEFAULTS.length_penalty,
                            1, variant, api_name="/caption")
    seconds = time.perf_counter() - started
    return seconds, result["encoder_ms"] + result["greedy"]["decode_ms"] + result["beam"]["decode_ms"]


def _load(server: Server, callers: int, per_caller: int, images: list[Path]) -> dict:
    clients = [server.client() for _ in range(callers)]
    latencies: list[float] = []
    model_ms: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def caller(index: int) -> None:
        for i in range(per_caller):
            try:
                seconds, model = call(clients[index], images[(index * per_caller + i) % len(images)], server.variant)
            except Exception as exc:  # noqa: BLE001 - a failed request is a result here, not a crash
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(seconds)
                model_ms.append(model)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"callers": callers, "requests": callers * per_caller, "errors": len(errors), "error_samples": errors[:3],
            "throughput_per_s": len(latencies) / wall, "p50_ms": float(np.percentile(latencies, 50)) * 1000,
            "p95_ms": float(np.percentile(latencies, 95)) * 1000, "model_p50_ms": float(np.percentile(model_ms, 50))}


def measure(run: Path, quick: bool = False) -> dict:
    from export.space import build_space  # lazy: imports Gradio, which the other benchmarks' processes skip

    bundle = RunFiles(run).bundle
    if not all((bundle / layout.encoder_file(v)).is_file() for v in layout.VARIANTS):
        return {"name": "serving_load", "skipped": f"{bundle} has no fp32 and int8 encoders (export --quantize int8)"}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        images = photo_like_jpegs(Path(tmp) / "images", 16, seed=11)
        variants = {v: _one_variant(build_space(run, Path(tmp) / v, v) / layout.BUNDLE_DIR, v, images, quick)
                    for v in layout.VARIANTS}
    return {"name": "serving_load", "beams": DEFAULTS.compared_num_beams, "variants": variants}


def _one_variant(bundle: Path, variant: str, images: list[Path], quick: bool) -> dict:
    requests = 4 if quick else 24  # per level, split over the callers (at least 2 each)
    server = Server(bundle, images[0], variant)
    try:
        for image in images[:2]:  # warm-up: first requests of each thread pool
            call(server.client(), image, variant)
        levels = [_load(server, n, max(2, requests // n), images) for n in CALLERS]
        peak = peak_rss_mib(server.process.pid)
    finally:
        server.close()
    return {"cold_start_s": server.cold_start_s, "peak_rss_mib": peak, "levels": levels,
            "throughput_gain_8_to_1": levels[-1]["throughput_per_s"] / levels[0]["throughput_per_s"]}
