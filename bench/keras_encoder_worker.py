"""The Keras fp32 encoder, timed in its own process on the parent's cue.

TensorFlow in the benchmark's process would slow ONNX Runtime there for good
(its thread pools stay busy), so Keras runs here and the parent interleaves:
it writes a batch size on stdin, this process runs one forward pass on that
batch (pixels made beforehand, once per size) and answers `done`; the parent
times the round trip, a pipe's microseconds beside a forward pass's 100+ ms.
"""
from __future__ import annotations

import sys

import numpy as np

from train.encoder import EncoderSpec, build_encoder


def main() -> int:
    encoder = build_encoder(EncoderSpec("none", 0))  # weights do not change the arithmetic
    print("ready", flush=True)
    pixels: dict[int, np.ndarray] = {}
    for line in sys.stdin:
        batch = int(line)
        if batch not in pixels:
            pixels[batch] = np.random.default_rng(batch).integers(0, 255, (batch, 224, 224, 3)).astype(np.float32)
        encoder.predict_on_batch(pixels[batch])
        print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
