"""A Flickr-sized captioner with random weights (V=8485, E=H=256), saved as Keras and exported as ONNX.

Run as a child process by the decoding benchmark, so TensorFlow never runs in
the process that times ONNX Runtime. Random weights are enough: the cost of a
step does not depend on what the weights are, only on their shapes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.decoding import FLICKR_VOCAB
from demo import bundle_layout as layout
from export.graph_edit import split_decoder
from export.tf_side import keras, step_to_onnx
from train.model import ModelSpec, build_step_model, build_training_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flickr_scale_model")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vocab-size", type=int, default=FLICKR_VOCAB)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    trained = build_training_model(ModelSpec(vocab_size=args.vocab_size, feature_scale=0.01))
    trained.save(args.out / "model.keras")
    step_to_onnx(build_step_model(trained), args.out / layout.DECODER_STEP, opset=17)
    split_decoder(args.out / layout.DECODER_STEP, args.out / layout.IMAGE_PROJECTION,
                  args.out / layout.DECODER_STEP_IMAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
