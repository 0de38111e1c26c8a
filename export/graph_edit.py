"""ONNX graph surgery without TensorFlow: names, and the encoder's dense layers as Gemm nodes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.utils import extract_model

from demo import bundle_layout as layout
from export.errors import ExportError
from train.encoder import FEATURE_DIM, POOL_DIM

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
    in conv.onnx) are skipped, one dense kernel is held at a time. fc1 and fc2
    see one extra row of zeros, dropped after fc2 (`_pad_rows`, `_unpad_rows`).
    """
    proto = onnx.load_model(conv_path)
    graph = proto.graph
    if [o.name for o in graph.output] != [CONV_OUTPUT]:
        raise ExportError(f"{conv_path} does not end in {CONV_OUTPUT!r}")
    del graph.output[:]
    previous = _pad_rows(graph, CONV_OUTPUT)
    for name, kernel, bias in weights:
        if name not in ("fc1", "fc2"):
            if name == "predictions":
                break
            continue
        graph.initializer.extend([numpy_helper.from_array(kernel, f"{name}_kernel"),
                                  numpy_helper.from_array(bias, f"{name}_bias")])
        del kernel, bias
        output = f"{name}_relu"
        graph.node.extend([
            helper.make_node("Gemm", [previous, f"{name}_kernel", f"{name}_bias"], [f"{name}_linear"], name=name),
            helper.make_node("Relu", [f"{name}_linear"], [output], name=f"{name}_relu"),
        ])
        previous = output
    if previous != "fc2_relu":
        raise ExportError("the weight stream ended before fc2")
    _unpad_rows(graph, previous, layout.FEATURES)
    graph.output.extend([helper.make_tensor_value_info(layout.FEATURES, TensorProto.FLOAT, ["batch", FEATURE_DIM])])
    graph.name = "vgg16_fc2_encoder"
    save_with_external_data(proto, out_path)


def _pad_rows(graph, rows: str) -> str:
    """Append a zero row to the dense layers' input, so that fc1 and fc2 never run on a single row.

    Why: without prepacked weights ONNX Runtime's CPU Gemm runs one row on another kernel (a GEMV) than
    several, and an image's features would differ in their last bits between a batch of 1 and a batch of 8.
    With at least two rows always, they are the same in any batch, which a batching server needs to answer
    exactly what a lone request gets, and the fp32 encoder can run without prepacking, which would keep a
    second, repacked copy of these 480 MB of weights (each variant's `encoder_memory`, `demo.bundle_layout`).
    Cost: one row of the Gemms (~7% of an fp32 batch-1 pass on 2 cores, measured).
    """
    graph.initializer.append(numpy_helper.from_array(np.zeros((1, POOL_DIM), np.float32), "pad_row"))
    graph.node.append(helper.make_node("Concat", [rows, "pad_row"], [f"{rows}_padded"], axis=0, name="pad_rows"))
    return f"{rows}_padded"


def _unpad_rows(graph, rows: str, out: str) -> None:
    """Drop the zero row `_pad_rows` added."""
    graph.initializer.extend([numpy_helper.from_array(np.array([value], np.int64), name)
                              for value, name in ((0, "unpad_start"), (-1, "unpad_end"), (0, "unpad_axis"))])
    graph.node.append(helper.make_node("Slice", [rows, "unpad_start", "unpad_end", "unpad_axis"], [out],
                                       name="unpad_rows"))


def save_with_external_data(proto, out_path: Path) -> None:
    """The graph at `out_path`, its weights in `out_path.data` beside it (see `demo.bundle_layout`): what lets
    ONNX Runtime map the weights instead of copying them."""
    data = out_path.with_name(layout.external_data(out_path.name))
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(proto, out_path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    data.chmod(out_path.stat().st_mode & 0o777)  # onnx creates it owner-only; a server may run as another user


def split_decoder(decoder_path: Path, projection_path: Path, topk_path: Path, end_id: int, top_k: int) -> None:
    """Cut decoder_step.onnx after the image projection, and give the per-step part the search's ends.

    `image_projection.onnx`: features -> image (B, H), run once per image.
    `decoder_step_topk.onnx`: the rest of the step, every step, without the 4096 x H image Dense (the
    largest matrix of a step); see `add_search_ends` for what it adds in front and behind.
    """
    proto = onnx.load_model(decoder_path)
    relus = [n.output[0] for n in proto.graph.node if n.op_type == "Relu" and "image_dense" in n.name]
    if len(relus) != 1:
        raise ExportError(f"{decoder_path}: cannot find the image projection to split at (found {relus})")
    image = relus[0]
    extract_model(str(decoder_path), str(projection_path), [layout.FEATURES], [image])
    extract_model(str(decoder_path), str(topk_path), [image, layout.TOKEN, layout.H, layout.C], layout.STEP_OUTPUTS)
    projection = onnx.load_model(projection_path)  # the cut edge is the projection's output, the step's input
    rename_value(projection, image, layout.IMAGE)
    onnx.save_model(projection, projection_path)
    step = onnx.load_model(topk_path)
    rename_value(step, image, layout.IMAGE)
    add_search_ends(step, end_id, top_k)
    step.graph.name = layout.DEFAULT_DECODER.removesuffix(".onnx")
    onnx.save_model(step, topk_path)


def add_search_ends(proto, end_id: int, top_k: int) -> None:
    """(image, token, h, c) -> (log_probs, h_out, c_out) becomes the search's step, in place:

    in front, Gather(rows) of image, h and c (the beams' reordering, done where the state lives);
    behind, log_probs + ban (0 or -inf per token), TopK(top_k) of that (values sorted, ties by lower
    id), and its <end> column; the gathered image goes out as image_out for the next step.
    """
    graph = proto.graph
    vocab_size = next(o for o in graph.output if o.name == layout.LOG_PROBS).type.tensor_type.shape.dim[-1].dim_value
    hidden = next(i for i in graph.input if i.name == layout.H).type.tensor_type.shape.dim[-1].dim_value
    top_k = min(top_k, vocab_size)
    state = (layout.IMAGE, layout.H, layout.C)
    for name in state:  # the old inputs become the gathered rows
        rename_value(proto, name, f"{name}_selected")
    for name in (layout.LOG_PROBS,):
        rename_value(proto, name, "log_probs_all")
    front = [helper.make_node("Gather", [name, layout.ROWS], [f"{name}_selected"], axis=0, name=f"select_{name}")
             for name in state]
    nodes = [*front, *graph.node]  # a graph's nodes are listed in topological order
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend([numpy_helper.from_array(np.array([top_k], dtype=np.int64), "top_k"),
                              numpy_helper.from_array(np.array(end_id, dtype=np.int64), "end_id")])
    graph.node.extend([
        helper.make_node("Add", ["log_probs_all", layout.BAN], ["log_probs_allowed"], name="ban"),
        helper.make_node("TopK", ["log_probs_allowed", "top_k"], [layout.TOP_LOG_PROBS, layout.TOP_IDS], axis=-1,
                         largest=1, sorted=1, name="top_k"),
        helper.make_node("Gather", ["log_probs_allowed", "end_id"], [layout.END_LOG_PROB], axis=1, name="end"),
        helper.make_node("Identity", [f"{layout.IMAGE}_selected"], [layout.IMAGE_OUT], name="image_out"),
    ])
    kept = {o.name: o for o in graph.output}
    del graph.input[:], graph.output[:], graph.value_info[:]  # shapes of renamed edges; ORT infers them again
    float_, int64 = TensorProto.FLOAT, TensorProto.INT64
    graph.input.extend([
        helper.make_tensor_value_info(layout.IMAGE, float_, ["rows_before", hidden]),
        helper.make_tensor_value_info(layout.TOKEN, int64, ["rows"]),
        helper.make_tensor_value_info(layout.H, float_, ["rows_before", hidden]),
        helper.make_tensor_value_info(layout.C, float_, ["rows_before", hidden]),
        helper.make_tensor_value_info(layout.ROWS, int64, ["rows"]),
        helper.make_tensor_value_info(layout.BAN, float_, [vocab_size]),
    ])
    graph.output.extend([
        helper.make_tensor_value_info(layout.TOP_LOG_PROBS, float_, ["rows", top_k]),
        helper.make_tensor_value_info(layout.TOP_IDS, int64, ["rows", top_k]),
        helper.make_tensor_value_info(layout.END_LOG_PROB, float_, ["rows"]),
        helper.make_tensor_value_info(layout.IMAGE_OUT, float_, ["rows", hidden]),
        kept[layout.H_OUT], kept[layout.C_OUT],
    ])
    for value in graph.output[-2:]:
        value.type.tensor_type.shape.dim[0].dim_param = "rows"

