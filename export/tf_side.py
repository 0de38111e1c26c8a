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
from pathlib import Path

import numpy as np

from demo.artifacts import atomic_write_json, read_json
from demo.preprocess import IMAGE_SIZE, load_image
from export.graph_edit import CONV_OUTPUT, rename_value
from train.encoder import FEATURE_DIM, IMAGENET_BGR_MEAN, build_encoder, vgg16_architecture, vgg16_weights
from train.features import run_encoder_spec
from train.run_files import RunFiles
from train.tf_import import import_keras

keras = import_keras()
import tensorflow as tf  # noqa: E402  (after the quiet import)
import tf2onnx  # noqa: E402


def convert_conv_part(files: RunFiles, out: Path, opset: int) -> None:
    """conv.onnx: uint8 pixels -> the flattened block5_pool activations (25088), preprocessing inside."""
    import onnx

    conv = vgg16_architecture(top=False)
    for name, kernel, bias in vgg16_weights(run_encoder_spec(files)):
        if not name.startswith("block"):
            break  # the dense layers are appended by the parent, straight from the weight file
        conv.get_layer(name).set_weights([kernel, bias])

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8, name="pixels")])
    def conv_part(pixels):
        bgr = tf.reverse(tf.cast(pixels, tf.float32), axis=[-1]) - tf.constant(IMAGENET_BGR_MEAN, tf.float32)
        return conv(bgr, training=False)

    proto, _ = tf2onnx.convert.from_function(conv_part, input_signature=conv_part.input_signature, opset=opset)
    rename_value(proto, proto.graph.output[0].name, CONV_OUTPUT)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save_model(proto, out / "conv.onnx")


def encoder_reference(files: RunFiles, out: Path, parity_images: list[str]) -> None:
    """Keras' own features (the model that built the cache) for the parity images, in its own process."""
    root = Path(read_json(files.captions, "captions file")["image_root"])
    pixels = np.stack([load_image(root / image_id) for image_id in parity_images])
    reference = build_encoder(run_encoder_spec(files)).predict_on_batch(pixels.astype(np.float32))
    np.save(out / "reference_encoder_pixels.npy", pixels)
    np.save(out / "reference_encoder_features.npy", np.asarray(reference, dtype=np.float32))


def convert_decoder(files: RunFiles, out: Path, opset: int) -> None:
    """decoder_step.onnx plus Keras references: step outputs on a probe batch and test-split captions."""
    import train.model  # noqa: F401  (registers the custom layers)
    from train.model import build_step_model

    trained = keras.models.load_model(files.model)
    step = build_step_model(trained)
    step_to_onnx(step, out / "decoder_step.onnx", opset)
    _decoder_references(files, out, step, trained.get_layer("lstm").units)


def step_to_onnx(step, path: Path, opset: int) -> None:
    """tf2onnx conversion of a Keras step model with the contract's names and a dynamic batch axis."""
    import onnx

    hidden = int(step.inputs[2].shape[-1])

    @tf.function(input_signature=[tf.TensorSpec([None, FEATURE_DIM], tf.float32, name="features"),
                                  tf.TensorSpec([None], tf.int64, name="token"),
                                  tf.TensorSpec([None, hidden], tf.float32, name="h"),
                                  tf.TensorSpec([None, hidden], tf.float32, name="c")])
    def decoder_step(features, token, h, c):
        log_probs, h_out, c_out = step({"features": features, "token": tf.cast(token, tf.int32), "h": h, "c": c},
                                       training=False)
        return log_probs, h_out, c_out

    proto, _ = tf2onnx.convert.from_function(decoder_step, input_signature=decoder_step.input_signature, opset=opset)
    for old, new in zip([o.name for o in proto.graph.output], ("log_probs", "h_out", "c_out")):
        rename_value(proto, old, new)
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    proto.graph.name = "decoder_step"
    onnx.save_model(proto, path)


def _decoder_references(files: RunFiles, out: Path, step, hidden: int) -> None:
    from demo.search import best, options_for
    from demo.vocab import Vocabulary
    from train.features import load_cache
    from train.keras_step import KerasStepModel

    vocab = Vocabulary.load(files.vocab)
    cache = load_cache(files)
    test_ids = [e["id"] for e in read_json(files.captions, "captions file")["images"] if e["split"] == "test"]
    features = cache.lookup(test_ids)
    rng = np.random.default_rng(0)
    probe = {"features": features[:16], "token": rng.integers(1, len(vocab), len(features[:16])),
             "h": rng.normal(0, 0.5, (len(features[:16]), hidden)).astype(np.float32),
             "c": rng.normal(0, 0.5, (len(features[:16]), hidden)).astype(np.float32)}
    outputs = step.predict_on_batch({**probe, "token": probe["token"].astype(np.int32)})
    np.savez(out / "reference_decoder.npz", **probe, log_probs=outputs[0], h_out=outputs[1], c_out=outputs[2])
    keras_step = KerasStepModel(step_model=step)
    captions = {"image_ids": test_ids}
    for width in (1, 3):
        found = best(keras_step, features, vocab.start_id, vocab.end_id, options_for(vocab, width))
        captions["greedy" if width == 1 else "beam_3"] = [list(h.tokens) for h in found]
    atomic_write_json(out / "reference_captions.json", captions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.tf_side")
    parser.add_argument("part", choices=("encoder-conv", "encoder-reference", "decoder"))
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--parity-images", nargs="*", default=[])
    args = parser.parse_args(argv)
    files = RunFiles(args.run)
    try:
        if args.part == "encoder-conv":
            convert_conv_part(files, args.out, args.opset)
        elif args.part == "encoder-reference":
            encoder_reference(files, args.out, args.parity_images)
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
