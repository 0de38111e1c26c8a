"""Many API clients at once against one server: no errors, and no request gets another request's caption.

Slow: 200 requests (a VGG16 encoder pass each) against a real `python -m demo serve` subprocess: about
45 s on 2 cores (measured with the synthetic bundle); the server runs two at a time and queues the rest.
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow
REQUESTS = 200
CLIENTS = 8
SETTINGS = ((3, 20, 0.5, 3, "fp32"), (5, 12, 1.0, 2, "fp32"), (4, 16, 0.0, 4, "fp32"))  # beams, max_length,
# alpha, n-best, variant
DISTINCT = 16  # requests whose answers differ pairwise: a swap between any two of them shows


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """The app's example scenes plus generated pictures of other sizes, formats and colours."""
    from demo.web.page import example_images

    root = tmp_path_factory.mktemp("load")
    rng = np.random.default_rng(3)
    made = {"grain.jpg": Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)),
            "stripes.png": Image.fromarray(np.repeat(np.arange(0, 256, 8, dtype=np.uint8), 8)[None, :, None]
                                           .repeat(64, axis=0).repeat(3, axis=2)),
            "tiny.png": Image.new("RGB", (3, 2), (200, 120, 10))}
    for index, colour in enumerate(((20, 60, 200), (230, 230, 40), (30, 160, 60), (240, 240, 240))):
        made[f"block_{index}.png"] = Image.new("RGB", (160, 120), colour)
        made[f"block_{index}.png"].paste((250 - colour[0], 250 - colour[1], 250 - colour[2]),
                                         (20 + 25 * index, 30, 80 + 25 * index, 90))
    for name, image in made.items():
        image.save(root / name)
    return [Path(p) for p in example_images()] + [root / name for name in made]


def ask(client, image: Path, settings: tuple) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The parts of an answer that must not depend on what else the server is doing: captions, log-probs."""
    from gradio_client import handle_file

    result = client.predict(handle_file(str(image)), *settings, api_name="/caption")
    greedy, beam = result["greedy"], result["beam"]
    captions = (greedy["caption"], beam["caption"], *(c["caption"] for c in beam["candidates"]))
    return captions, (greedy["log_prob"], beam["log_prob"], *(c["log_prob"] for c in beam["candidates"]))


def same(got: tuple, want: tuple) -> bool:
    return got[0] == want[0] and np.allclose(got[1], want[1], rtol=0, atol=1e-4)


def pairwise_distinct(answers: dict) -> list:
    """The requests, in order, whose answer `same` tells apart from every one kept before it.

    Which (image, settings) pairs a freshly trained model answers alike depends on the weights, and so on
    the CPU that trained it: the requests are chosen from this run's own answers, never assumed distinct.
    """
    kept: list = []
    for job, answer in answers.items():
        if not any(same(answer, answers[other]) for other in kept):
            kept.append(job)
    return kept


def test_concurrent_clients_get_the_captions_their_images_get_alone(served_app, images):
    from gradio_client import Client

    alone_client = Client(served_app, verbose=False)
    alone = {(image, settings): ask(alone_client, image, settings) for settings in SETTINGS for image in images}
    distinct = pairwise_distinct(alone)
    print(f"\n{len(distinct)} of {len(alone)} (image, settings) requests answered pairwise distinctly")
    assert len(distinct) >= DISTINCT, f"only {len(distinct)} distinct answers: swaps between the rest would not show"
    jobs = [distinct[i % len(distinct)] for i in range(REQUESTS)]
    pending: queue.Queue = queue.Queue()
    for job in np.random.default_rng(0).permutation(len(jobs)):
        pending.put(jobs[job])
    answers: list[tuple] = []
    errors: list[str] = []

    def caller() -> None:
        client = Client(served_app, verbose=False)
        while True:
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            try:
                answers.append((job, ask(client, *job)))
            except Exception as exc:  # noqa: BLE001 -- every failure is reported below, not just the first
                errors.append(f"{job[0].name} {job[1]}: {type(exc).__name__}: {exc}")

    started = time.perf_counter()
    threads = [threading.Thread(target=caller) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    elapsed = time.perf_counter() - started
    print(f"\n{REQUESTS} requests from {CLIENTS} clients in {elapsed:.1f} s ({REQUESTS / elapsed:.1f} per s)")
    assert not errors, errors[:10]
    assert len(answers) == REQUESTS
    crossed = [(job[0].name, job[1], got, alone[job]) for job, got in answers if not same(got, alone[job])]
    assert not crossed, crossed[:5]
