"""ONNX graph surgery without TensorFlow: names, and the encoder's dense layers as Gemm nodes."""
from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.utils import extract_model

from demo import bundle_layout as layout
from export.errors import ExportError
from train.encoder import FEATURE_DIM

CONV_PART = "conv.onnx"  # the converted convolutional part, before fc1 and fc2 are appended (never shipped)
CONV_OUTPUT = "conv_flat"  # its output: the flattened block5_pool activations


def rename_value(proto, old: str, new: str) -> None:
    """Give a graph input or output (and every edge that carries it) a contract name."""
    for node in proto.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for value in [*proto.graph.input, *proto.graph.output]:
        if value.name == old:
            value.name = new


def append_dense_layers(conv_path: Path, weights, out_path: Path) -> None:
    """encoder.onnx = conv.onnx + Gemm/Relu for fc1 and fc2 from the (name, kernel, bias) stream.

    `weights` yields every VGG16 layer in model order; the conv layers (already
    in conv.onnx) are skipped, one dense kernel is held at a time.
    """
    proto = onnx.load_model(conv_path)
    graph = proto.graph
    if [o.name for o in graph.output] != [CONV_OUTPUT]:
        raise ExportError(f"{conv_path} does not end in {CONV_OUTPUT!r}")
    del graph.output[:]
    previous = CONV_OUTPUT
    for name, kernel, bias in weights:
        if name not in ("fc1", "fc2"):
            if name == "predictions":
                break
            continue
        graph.initializer.extend([numpy_helper.from_array(kernel, f"{name}_kernel"),
                                  numpy_helper.from_array(bias, f"{name}_bias")])
        del kernel, bias
        output = layout.FEATURES if name == "fc2" else f"{name}_relu"
        graph.node.extend([
            helper.make_node("Gemm", [previous, f"{name}_kernel", f"{name}_bias"], [f"{name}_linear"], name=name),
            helper.make_node("Relu", [f"{name}_linear"], [output], name=f"{name}_relu"),
        ])
        previous = output
    if previous != layout.FEATURES:
        raise ExportError("the weight stream ended before fc2")
    graph.output.extend([helper.make_tensor_value_info(layout.FEATURES, TensorProto.FLOAT, ["batch", FEATURE_DIM])])
    graph.name = "vgg16_fc2_encoder"
    onnx.save_model(proto, out_path)


def split_decoder(decoder_path: Path, projection_path: Path, core_path: Path) -> None:
    """Cut decoder_step.onnx after the image projection into two graphs of the same operations.

    `image_projection.onnx`: features -> image (B, H), run once per image.
    `decoder_step_image.onnx`: (image, token, h, c) -> (log_probs, h_out, c_out), run every step.
    The per-step graph then skips the 4096 x H image Dense, the largest matrix of a step.
    """
    proto = onnx.load_model(decoder_path)
    relus = [n.output[0] for n in proto.graph.node if n.op_type == "Relu" and "image_dense" in n.name]
    if len(relus) != 1:
        raise ExportError(f"{decoder_path}: cannot find the image projection to split at (found {relus})")
    image = relus[0]
    extract_model(str(decoder_path), str(projection_path), [layout.FEATURES], [image])
    extract_model(str(decoder_path), str(core_path), [image, layout.TOKEN, layout.H, layout.C], layout.STEP_OUTPUTS)
    for path in (projection_path, core_path):  # the cut edge is the projection's output, the step's input
        model = onnx.load_model(path)
        rename_value(model, image, layout.IMAGE)
        onnx.save_model(model, path)
