"""A Flickr-sized captioner with random weights (V=8485, E=H=256), saved as Keras and exported as ONNX.

Run as a child process by the decoding benchmark, so TensorFlow never runs in
the process that times ONNX Runtime. Random weights are enough: the cost of a
step does not depend on what the weights are, only on their shapes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

FLICKR_VOCAB = 8485  # Flickr30K words seen >= 5 times, as in the spike the targets come from


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flickr_scale_model")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vocab-size", type=int, default=FLICKR_VOCAB)
    args = parser.parse_args(argv)
    from export.graph_edit import split_decoder
    from export.tf_side import keras, step_to_onnx
    from train.model import ModelSpec, build_step_model, build_training_model

    keras.utils.set_random_seed(0)
    trained = build_training_model(ModelSpec(vocab_size=args.vocab_size, feature_scale=0.01))
    trained.save(args.out / "model.keras")
    step_to_onnx(build_step_model(trained), args.out / "decoder_step.onnx", opset=17)
    split_decoder(args.out / "decoder_step.onnx", args.out / "image_projection.onnx",
                  args.out / "decoder_step_image.onnx")
    return 0


if __name__ == "__main__":
    sys.exit(main())
