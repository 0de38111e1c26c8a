"""The Keras fp32 encoder, timed in its own process on the parent's cue.

TensorFlow in the benchmark's process would slow ONNX Runtime there for good
(its thread pools stay busy), so Keras runs here and the parent interleaves:
it writes a batch size on stdin, this process runs one timed forward pass on
that batch and answers with the seconds it took, one line each.
"""
from __future__ import annotations

import sys
import time

import numpy as np


def main() -> int:
    from train.encoder import EncoderSpec, build_encoder

    encoder = build_encoder(EncoderSpec("none", 0))  # weights do not change the arithmetic
    print("ready", flush=True)
    for line in sys.stdin:
        batch = int(line)
        pixels = np.random.default_rng(batch).integers(0, 255, (batch, 224, 224, 3)).astype(np.float32)
        started = time.perf_counter()
        encoder.predict_on_batch(pixels)
        print(time.perf_counter() - started, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
