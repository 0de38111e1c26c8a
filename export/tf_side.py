"""The TensorFlow half of the export, run in child processes by `export.bundle`.

Each conversion runs in its own process so its memory is returned to the
system before the next starts: the VGG16 conversion is the peak, and nothing
else is alive beside it. Each child writes its ONNX file and the Keras
reference outputs that the parent (which never imports TensorFlow) checks the
ONNX graphs against, then prints its peak RSS as one JSON line.

Encoder: tf2onnx converts the convolutional part with the input handling
(uint8 -> float, RGB -> BGR, ImageNet mean) in the graph (`conv.onnx`); the
parent appends fc1 and fc2 as ONNX Gemm+Relu nodes straight from the weight
file (`export.graph_edit`). Converting the 120M dense parameters through
TensorFlow's graph freezing is what costs tens of GB; as Gemm initializers
they cost their size, and no TensorFlow is alive beside them.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from demo import bundle_layout as layout
from demo.artifacts import atomic_write_json
from demo.generation import GENERATION
from demo.preprocess import IMAGE_SIZE, load_image
from demo.search import best, options_for
from demo.search.step import TopKStep
from demo.vocab import Vocabulary
from export.graph_edit import CONV_OUTPUT, CONV_PART, rename_value
from export.parity import (
    CHECKED_WIDTHS,
    REFERENCE_CAPTIONS,
    REFERENCE_DECODER,
    REFERENCE_FEATURES,
    REFERENCE_PIXELS,
    REFERENCE_TEST_FEATURES,
    REFERENCE_TIMING,
    REFERENCE_TOP,
    read_top,
)
from train.captions_file import read_captions
from train.encoder import FEATURE_DIM, IMAGENET_BGR_MEAN, EncoderSpec, build_encoder, load_conv_part
from train.evaluate import search_key
from train.keras_step import KerasStepModel
from train.model import build_step_model, fine_tuned_top, load_trained
from train.run_features import run_encoder_spec, trained_features
from train.run_files import RunFiles
from train.tf_import import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402  (after the quiet import)
import tf2onnx  # noqa: E402


def convert_conv_part(files: RunFiles, out: Path, opset: int, spec: EncoderSpec | None = None) -> None:
    """conv.onnx: uint8 pixels -> the flattened block5_pool activations (25088), preprocessing inside; the
    weights the run's cache was built with, or `spec` (a cache not built yet: `export.feature_encoder`)."""
    conv = load_conv_part(spec or run_encoder_spec(files))  # the dense layers are appended by the parent

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8, name=layout.PIXELS)])
    def conv_part(pixels):
        bgr = tf.reverse(tf.cast(pixels, tf.float32), axis=[-1]) - tf.constant(IMAGENET_BGR_MEAN, tf.float32)
        return conv(bgr, training=False)

    proto, _ = tf2onnx.convert.from_function(conv_part, input_signature=conv_part.input_signature, opset=opset)
    rename_value(proto, proto.graph.output[0].name, CONV_OUTPUT)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save_model(proto, out / CONV_PART)


def encoder_reference(files: RunFiles, out: Path, parity_images: list[str], spec: EncoderSpec | None = None) -> None:
    """Keras' own features (the model that built the cache, or `spec`'s) for the parity images, in its own
    process."""
    root = read_captions(files.captions).image_root
    pixels = np.stack([load_image(root / image_id) for image_id in parity_images])
    top = read_top(out / REFERENCE_TOP) if (out / REFERENCE_TOP).is_file() else None  # a fine-tuned fc1/fc2
    encoder = build_encoder(spec or run_encoder_spec(files), top=top)
    reference = encoder.predict_on_batch(pixels.astype(np.float32))
    started = time.perf_counter()  # a second pass, traced already: what extracting with Keras costs an image
    encoder.predict_on_batch(pixels.astype(np.float32))
    seconds = (time.perf_counter() - started) / len(pixels)
    atomic_write_json(out / REFERENCE_TIMING, {"keras_seconds_per_image": seconds})
    np.save(out / REFERENCE_PIXELS, pixels)
    np.save(out / REFERENCE_FEATURES, np.asarray(reference, dtype=np.float32))


def convert_decoder(files: RunFiles, out: Path, opset: int) -> None:
    """decoder_step.onnx plus Keras references: step outputs on a probe batch and test-split captions."""
    trained = load_trained(files.model)
    step = build_step_model(trained)
    step_to_onnx(step, out / layout.DECODER_STEP, opset)
    top = fine_tuned_top(trained)
    if top is not None:
        np.savez(out / REFERENCE_TOP, **{f"{name}_{part}": array for name, weights in top.items()
                                         for part, array in zip(("kernel", "bias"), weights)})
    _decoder_references(files, out, step, trained.get_layer("lstm").units, top)


def step_to_onnx(step, path: Path, opset: int) -> None:
    """tf2onnx conversion of a Keras step model with the contract's names and a dynamic batch axis."""
    hidden = int(step.inputs[2].shape[-1])

    @tf.function(input_signature=[tf.TensorSpec([None, FEATURE_DIM], tf.float32, name=layout.FEATURES),
                                  tf.TensorSpec([None], tf.int64, name=layout.TOKEN),
                                  tf.TensorSpec([None, hidden], tf.float32, name=layout.H),
                                  tf.TensorSpec([None, hidden], tf.float32, name=layout.C)])
    def decoder_step(features, token, h, c):
        inputs = {layout.FEATURES: features, layout.TOKEN: tf.cast(token, tf.int32), layout.H: h, layout.C: c}
        log_probs, h_out, c_out = step(inputs, training=False)
        return log_probs, h_out, c_out

    proto, _ = tf2onnx.convert.from_function(decoder_step, input_signature=decoder_step.input_signature, opset=opset)
    for old, new in zip([o.name for o in proto.graph.output], layout.STEP_OUTPUTS):
        rename_value(proto, old, new)
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    proto.graph.name = layout.DECODER_STEP.removesuffix(".onnx")
    onnx.save_model(proto, path)


def _decoder_references(files: RunFiles, out: Path, step, hidden: int, top) -> None:
    vocab = Vocabulary.load(files.vocab)
    test_ids = read_captions(files.captions).ids("test")
    features = trained_features(files, test_ids, top)
    np.save(out / REFERENCE_TEST_FEATURES, features)
    rng = np.random.default_rng(0)
    rows = len(features[:16])
    probe = {layout.FEATURES: features[:16], layout.TOKEN: rng.integers(1, len(vocab), rows),
             layout.H: rng.normal(0, 0.5, (rows, hidden)).astype(np.float32),
             layout.C: rng.normal(0, 0.5, (rows, hidden)).astype(np.float32)}
    outputs = step.predict_on_batch({**probe, layout.TOKEN: probe[layout.TOKEN].astype(np.int32)})
    np.savez(out / REFERENCE_DECODER, **probe, **dict(zip(layout.STEP_OUTPUTS, outputs)))
    keras_step = TopKStep(KerasStepModel(step_model=step), vocab.end_id)
    captions = {"image_ids": test_ids}
    for width in CHECKED_WIDTHS:
        options = options_for(vocab, GENERATION.replace(num_beams=width))
        found = best(keras_step, features, vocab.start_id, vocab.end_id, options)
        captions[search_key(width)] = [list(h.tokens) for h in found]
    atomic_write_json(out / REFERENCE_CAPTIONS, captions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.tf_side")
    parser.add_argument("part", choices=("encoder-conv", "encoder-reference", "decoder"))
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--parity-images", nargs="*", default=[])
    parser.add_argument("--vgg-weights", default=None, help="the encoder's weights (default: the run cache's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    files = RunFiles(args.run)
    spec = EncoderSpec(args.vgg_weights, args.seed) if args.vgg_weights else None
    try:
        if args.part == "encoder-conv":
            convert_conv_part(files, args.out, args.opset, spec)
        elif args.part == "encoder-reference":
            encoder_reference(files, args.out, args.parity_images, spec)
        else:
            convert_decoder(files, args.out, args.opset)
    except Exception as exc:  # the parent reports it; a one-line cause reads better than a TF traceback
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"part": args.part, "peak_rss_gib": round(peak_gib, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
