"""Requests that arrive together share one encoder pass: continuous batching for a server.

Each request thread hands its preprocessed image to an `EncoderBatcher` and
waits. One worker thread runs the encoder: when it is idle, the first request
runs at once as a batch of one (a lone caller waits for nothing); while it is
busy, requests queue, and the next pass takes all of them (up to
`max_batch_size`). So batches form exactly when there is contention, without a
fixed collection delay. (Two workers, two passes at once, were no faster on
2 cores and halved the mean batch.)

Why not Gradio's `batch=True`: a failure in a Gradio batch function fails every
request of the batch with one message, and a bad upload must fail only its own
request. Here each request decodes its own image in its own thread (its error
is its own) and only valid pixels reach the batch; the Gradio queue still
admits, orders and limits requests, so `gradio_client` and the page see no
difference.

Why answers stay the same: ONNX Runtime's CPU kernels compute convolutions
image by image, and the exported encoders' fc layers never run on a single row
(a zero row is appended: `export.graph_edit._pad_rows`, since a 1-row Gemm
without prepacked weights takes another kernel), so an image's features are
bit-identical at batch 1 and batch 8 (checked by
`tests/demo/test_encoder_batching.py` on the exported encoders); the decoder
then runs per request, exactly as for a lone request.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

DEFAULT_MAX_BATCH_SIZE = 8  # the server's: requests in flight and images per pass (README Performance)
Encode = Callable[[np.ndarray], np.ndarray]  # uint8 (B, 224, 224, 3) -> float32 (B, F)


@dataclass
class Encoded:
    """One image's features and the pass it shared."""

    features: np.ndarray  # (1, F): ready for the search
    batch_size: int  # images in the encoder pass that computed it
    encoder_ms: float  # that pass's time divided by its images (what this image cost)


@dataclass
class _Request:
    pixels: np.ndarray  # (224, 224, 3)
    done: threading.Event = field(default_factory=threading.Event)
    result: Encoded | None = None
    error: BaseException | None = None


class EncoderBatcher:
    """Thread-safe `encode(pixels) -> Encoded`; concurrent calls share passes of up to `max_batch_size` images."""

    def __init__(self, encode: Encode, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._encode, self.max_batch_size = encode, max_batch_size
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self.passes: Counter[int] = Counter()  # passes per batch size: what batching did, for logs and tests
        threading.Thread(target=self._run, name="encoder-batcher", daemon=True).start()

    def encode(self, pixels: np.ndarray) -> Encoded:
        """Features of one preprocessed image; blocks until its pass is done. An encoder failure is raised in
        every request of that pass (it is the model's, not one image's: the pixels were already valid)."""
        request = _Request(pixels)
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def queued(self) -> int:
        """Requests waiting for the next pass (the one running not counted)."""
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]  # idle: wait for the first request
            while len(batch) < self.max_batch_size:
                try:
                    batch.append(self._queue.get_nowait())  # what queued while the last pass ran
                except queue.Empty:
                    break
            self._pass(batch)

    def _pass(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        try:
            features = self._encode(np.stack([request.pixels for request in batch]))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting requests, which raise it
            for request in batch:
                request.error = exc
        else:
            per_image = (time.perf_counter() - started) * 1000 / len(batch)
            self.passes[len(batch)] += 1
            for row, request in enumerate(batch):
                request.result = Encoded(features[row:row + 1], len(batch), per_image)
        for request in batch:
            request.done.set()
