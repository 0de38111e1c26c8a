"""Requests batched together: the premise (an image's features do not depend on its batch), the batcher's
behaviour (a lone request runs at once, concurrent ones share passes, failures reach the right requests), and the
real server under concurrent `gradio_client` callers answering each exactly as it answers the request alone."""
import json
import threading
import time

import numpy as np
import pytest

from demo.encoder_batching import EncoderBatcher
from tests.helpers import ask_caption, encoded, split_images


def run_together(function, arguments: list) -> list:
    """`function(argument)` in one thread each, released at once; results (or exceptions) in order."""
    barrier, results = threading.Barrier(len(arguments)), [None] * len(arguments)

    def worker(index: int) -> None:
        barrier.wait()
        try:
            results[index] = function(arguments[index])
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(arguments))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


class HeldDouble:
    """A stand-in encoder (features = 2 x the first pixel). With `requests`, its first pass is held until all of them
    are in (that pass, or queued behind it): requests queue by construction, not by a sleep."""

    def __init__(self, requests: int = 0, fail_on: int | None = None):
        self.requests, self.fail_on, self.calls, self.batcher = requests, fail_on, [], None

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if self.requests and not self.calls:
            deadline = time.monotonic() + 60
            while len(pixels) + self.batcher.queued() < self.requests:
                assert time.monotonic() < deadline, "the other requests never queued"
                time.sleep(0.001)
        self.calls.append(len(pixels))
        if self.fail_on is not None and self.fail_on in pixels[:, 0, 0, 0]:
            raise RuntimeError("the encoder failed")
        return 2.0 * pixels[:, 0, 0, :1].astype(np.float32)


def batcher_for(encoder: HeldDouble, max_batch_size: int) -> EncoderBatcher:
    encoder.batcher = EncoderBatcher(encoder, max_batch_size=max_batch_size)
    return encoder.batcher


def pixels(value: int) -> np.ndarray:
    return np.full((224, 224, 3), value, dtype=np.uint8)


def test_a_lone_request_runs_at_once_as_a_batch_of_one():
    encoder = HeldDouble()
    batcher = batcher_for(encoder, max_batch_size=8)
    got = batcher.encode(pixels(7))
    assert got.features.tolist() == [[14.0]] and got.batch_size == 1 and encoder.calls == [1]


def test_concurrent_requests_share_passes_no_larger_than_the_limit_and_get_their_own_rows():
    encoder = HeldDouble(requests=10)
    batcher = batcher_for(encoder, max_batch_size=4)
    results = run_together(batcher.encode, [pixels(v) for v in range(10)])
    assert [r.features.tolist() for r in results] == [[[2.0 * v]] for v in range(10)]
    assert sum(encoder.calls) == 10 and max(encoder.calls) == 4 and len(encoder.calls) < 10, encoder.calls
    assert sorted(batcher.passes.elements()) == sorted(encoder.calls)


def test_an_encoder_failure_reaches_the_requests_of_its_pass_only():
    encoder = HeldDouble(fail_on=3)
    batcher = batcher_for(encoder, max_batch_size=8)
    first = run_together(batcher.encode, [pixels(1)])  # alone: its own pass
    results = run_together(batcher.encode, [pixels(v) for v in (2, 3, 4)])
    assert first[0].features.tolist() == [[2.0]]
    failed = [r for r in results if isinstance(r, RuntimeError)]
    assert failed and all("the encoder failed" in str(r) for r in failed)
    assert batcher.encode(pixels(5)).features.tolist() == [[10.0]], "the batcher goes on after a failure"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_an_image_has_the_same_features_in_any_batch(exported_run, variant):
    """The premise of batching requests: ONNX Runtime computes each image of a batch on its own, with the session
    options the Captioner uses, so batched answers can equal lone ones exactly."""
    from demo.captioner import Captioner
    from demo.preprocess import load_image

    captioner = Captioner(exported_run / "onnx", provider="cpu", variant=variant)
    images = np.stack([load_image(p) for p in split_images(exported_run, count=5)])
    alone = np.concatenate([captioner.encode(images[i:i + 1])[0] for i in range(len(images))])
    for size in (2, 5):
        together = np.concatenate([captioner.encode(images[i:i + size])[0] for i in range(0, len(images), size)])
        np.testing.assert_array_equal(together, alone)


def without_timings(answer: dict) -> dict:
    return {k: without_timings(v) if isinstance(v, dict) else v for k, v in answer.items()
            if k not in ("encoder_ms", "encoder_batch", "timings_ms")}


# Two settings (num_beams, max_length, length_penalty, num_return_sequences), so requests decoding differently
# share encoder passes: the product's defaults (nothing sent) and a wider, shorter search.
SETTINGS = ((), (5, 12, 1.0, 2))


@pytest.mark.slow
def test_concurrent_callers_share_passes_and_each_gets_what_it_gets_alone(served_app, exported_run, tmp_path):
    """24 `gradio_client` callers at once on the served app (batching on by default), one sending a damaged JPEG:
    every answer equals the same request sent alone (captions, log-probabilities, per-word log-probabilities,
    provider, variant), the damaged one fails with its own message, and passes were shared. The requests' lone
    answers differ pairwise, so an answer handed to the wrong request would show."""
    from PIL import Image

    images = split_images(exported_run, count=6)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(encoded(Image.new("RGB", (300, 200), "red"), "JPEG")[:300])
    jobs = [(image, settings) for settings in SETTINGS for image in images]
    alone = {job: without_timings(ask_caption(served_app, *job[:1], *job[1])) for job in jobs}
    assert len({json.dumps(answer, sort_keys=True) for answer in alone.values()}) == len(jobs), \
        "two requests answered alike: a swap between them would not show"
    requests = [jobs[i % len(jobs)] for i in range(23)] + [(broken, ())]

    def ask(job):
        return ask_caption(served_app, job[0], *job[1])

    answers = run_together(ask, requests)
    assert isinstance(answers[-1], Exception) and "broken.jpg" in str(answers[-1]), answers[-1]
    for job, answer in zip(requests[:-1], answers[:-1]):
        assert not isinstance(answer, Exception), answer
        assert without_timings(answer) == alone[job], (job[0].name, job[1])
        total = sum(answer["greedy"]["word_log_probs"]) + answer["greedy"]["end_log_prob"]
        assert total == pytest.approx(answer["greedy"]["log_prob"], abs=1e-9)
    assert max(answer["encoder_batch"] for answer in answers[:-1]) > 1, "no request shared an encoder pass"
