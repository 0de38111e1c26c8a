"""The real server under load, batched and unbatched: requests/s and latency for 1 and 8 `gradio_client` callers.

`python -m demo serve` runs in its own process on a loopback port, as a user
starts it, once per encoder variant on a bundle holding that variant alone
(the bundle `python -m export.space` ships), so its memory is that variant's;
and twice per variant, both up at once: with request batching (the default,
`--max-batch-size 8`) and without (`--max-batch-size 1`), their loads
interleaved so both see the same machine. Each caller is a thread with its own
Client sending Flickr-sized JPEGs to the `caption` endpoint (greedy and beam 3,
one encoder pass) one after another. Every answer under 8 callers is compared
with the answer to the same request sent alone (captions, log-probabilities,
per-word log-probabilities, provider, variant; not the timings). Also
measured: each server's cold start (process start to the first caption
answered) and peak RSS (VmHWM) after all the load, which on the batched
server includes the HTTP API's (`bench.rest_load`: its latency against the
model in-process, its throughput against Gradio's, and a storm of good and
bad requests). Both servers require an API key, as a public deployment would.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench import rest_load
from bench.decoding import MAX_WORDS
from bench.effort import measured_variants, pick
from bench.images import photo_like_jpegs
from bench.machine import peak_rss_mib
from demo import bundle_layout as layout
from demo.generation import COMPARED
from train.run_files import RunFiles

CALLERS = (1, 8)
MODES = {"unbatched": 1, "batched": None}  # --max-batch-size (None: the server's default)
TARGETS = {"throughput_ratio_8_callers": {"int8": 1.8, "fp32": 1.3}, "p50_ratio_1_caller_at_most": 1.10,
           "peak_rss_mib_at_most": {"fp32": 800, "int8": 400}, "rest_p50_over_compare_at_most": 1.15,
           "rest_over_gradio_8_callers_at_least": 1.0}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m demo serve` in a child process; `cold_start_s` once the first caption came back."""

    def __init__(self, bundle: Path, first_image: Path, variant: str, max_batch_size: int | None = None):
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/"
        started = time.perf_counter()
        batching = [] if max_batch_size is None else ["--max-batch-size", str(max_batch_size)]
        self.process = subprocess.Popen([sys.executable, "-m", "demo", "serve", "--model", str(bundle),
                                         "--port", str(port), *batching],
                                        env=os.environ | {"CAPTIONER_API_KEYS": rest_load.API_KEY},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

        return Client(self.url, auth=("bench", rest_load.API_KEY), verbose=False)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def call(client, image: Path, variant: str) -> tuple[float, dict]:
    """One caption request; returns its latency in seconds and the answer."""
    from gradio_client import handle_file

    started = time.perf_counter()
    result = client.predict(handle_file(str(image)), COMPARED.num_beams, MAX_WORDS, COMPARED.length_penalty,
                            1, variant, api_name="/caption")
    return time.perf_counter() - started, result


def model_ms(answer: dict) -> float:
    """What the server says the model took: the difference to the latency is HTTP, the upload and the queue."""
    decoding = (answer[search]["timings_ms"]["decoder_ms_per_image"] for search in ("greedy", "beam"))
    return answer["encoder_ms"] + sum(decoding)


def _load(server: Server, callers: int, per_caller: int, images: list[Path], alone: dict[Path, dict]) -> dict:
    clients = [server.client() for _ in range(callers)]
    latencies: list[float] = []
    models: list[float] = []
    batches: list[int] = []
    errors: list[str] = []
    differ: list[str] = []
    lock = threading.Lock()

    def caller(index: int) -> None:
        for i in range(per_caller):
            image = images[(index * per_caller + i) % len(images)]
            try:
                seconds, answer = call(clients[index], image, server.variant)
            except Exception as exc:  # noqa: BLE001 - a failed request is a result here, not a crash
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(seconds)
                models.append(model_ms(answer))
                batches.append(answer.get("encoder_batch", 1))
                if image in alone and rest_load.without_timings(answer) != rest_load.without_timings(alone[image]):
                    differ.append(image.name)

    wall = rest_load.run_threads(caller, callers)
    return {"callers": callers, "requests": callers * per_caller, "errors": len(errors), "error_samples": errors[:3],
            "throughput_per_s": len(latencies) / wall, "p50_ms": float(np.percentile(latencies, 50)) * 1000,
            "p95_ms": float(np.percentile(latencies, 95)) * 1000, "model_p50_ms": float(np.percentile(models, 50)),
            "mean_encoder_batch": float(np.mean(batches)), "compared_with_alone": len(latencies),
            "differ_from_alone": len(differ), "differ_samples": differ[:3]}


def measure(run: Path, effort: str = "full") -> dict:
    from export.space import build_space  # lazy: imports Gradio, which the other benchmarks' processes skip

    bundle = RunFiles(run).bundle
    if not all((bundle / layout.encoder_file(v)).is_file() for v in layout.VARIANTS):
        return {"name": "serving_load", "skipped": f"{bundle} has no fp32 and int8 encoders (export --quantize int8)"}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        images = photo_like_jpegs(Path(tmp) / "images", 16, seed=11)
        variants = {v: _one_variant(build_space(run, Path(tmp) / v, v) / layout.BUNDLE_DIR, v, images, effort,
                                    Path(tmp) / "bad")
                    for v in measured_variants(effort)}
    return {"name": "serving_load", "beams": COMPARED.num_beams, "variants": variants, "targets": TARGETS}


def _one_variant(bundle: Path, variant: str, images: list[Path], effort: str, scratch: Path) -> dict:
    """Both servers up; the answers alone first (batched server, one request at a time), then the levels
    interleaved: unbatched 1, batched 1, unbatched 8, batched 8 and its REST twin; then the REST rows."""
    requests = pick(effort, {1: 2, 8: 8}, {1: 4, 8: 16}, {1: 24, 8: 200})
    servers = {}
    try:
        for mode, batch in MODES.items():
            servers[mode] = Server(bundle, images[0], variant, batch)
        client = servers["batched"].client()
        alone = {image: call(client, image, variant)[1] for image in images}
        for server in servers.values():
            call(server.client(), images[1], variant)  # warm-up: the first request of a fresh client
        levels: dict[str, list[dict]] = {mode: [] for mode in servers}
        for callers in CALLERS:
            for mode, server in servers.items():
                levels[mode].append(_load(server, callers, requests[callers] // callers, images, alone))
        batched = servers["batched"]
        rest = {"callers_8": rest_load.callers(batched.url, images, 8, requests[8] // 8, alone),
                "one_caller": rest_load.one_caller(batched.url, bundle, variant, images, pick(effort, 3, 12, 40)),
                "storm": rest_load.storm(batched.url, images, pick(effort, 32, 200, 2000), alone,
                                         lambda: batched.process.poll() is None, scratch)}
        peaks = {mode: peak_rss_mib(server.process.pid) for mode, server in servers.items()}
    finally:
        for server in servers.values():
            server.close()
    return _summary(variant, {mode: {"cold_start_s": servers[mode].cold_start_s, "peak_rss_mib": peaks[mode],
                                     "levels": levels[mode]} for mode in servers}, rest)


def _summary(variant: str, servers: dict, rest: dict) -> dict:
    batched, unbatched = servers["batched"]["levels"], servers["unbatched"]["levels"]
    storm = rest["storm"]
    ratios = {"throughput_8_callers": batched[-1]["throughput_per_s"] / unbatched[-1]["throughput_per_s"],
              "p50_1_caller": batched[0]["p50_ms"] / unbatched[0]["p50_ms"],
              "rest_p50_over_compare": rest["one_caller"]["ratio"],
              "rest_over_gradio_8_callers": rest["callers_8"]["throughput_per_s"] / batched[-1]["throughput_per_s"]}
    peak = servers["batched"]["peak_rss_mib"]
    met = {"throughput_8_callers": ratios["throughput_8_callers"] >= TARGETS["throughput_ratio_8_callers"][variant],
           "p50_1_caller": ratios["p50_1_caller"] <= TARGETS["p50_ratio_1_caller_at_most"],
           "peak_rss": peak <= TARGETS["peak_rss_mib_at_most"][variant],
           "no_errors": all(level["errors"] == 0 for s in servers.values() for level in s["levels"]),
           "answers_equal_alone": all(level["differ_from_alone"] == 0 for s in servers.values()
                                      for level in s["levels"]),
           "rest_p50": ratios["rest_p50_over_compare"] <= TARGETS["rest_p50_over_compare_at_most"],
           "rest_throughput": ratios["rest_over_gradio_8_callers"] >= TARGETS["rest_over_gradio_8_callers_at_least"],
           "rest_storm": storm["server_alive"] and storm["connection_failures"] == storm["wrong_status"] ==
           storm["server_errors_not_503"] == storm["good_unlike_alone"] == rest["callers_8"]["errors"] ==
           rest["callers_8"]["differ_from_alone"] == 0}
    return {"servers": servers, "rest": rest, "ratios": ratios, "met": met}
