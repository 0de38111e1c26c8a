"""The ONNX bundle's layout: its file names, variants and graph input/output names.

The one place these names are written. The export produces them, the runtime
(`Captioner`, `OnnxStepModel`) checks and uses them, the Space export copies
by them and the benchmarks open by them; a graph whose inputs or outputs
differ from `GRAPH_IO` is refused at load.
"""
from __future__ import annotations

from pathlib import Path

BUNDLE_DIR = "onnx"  # the bundle's folder in a run folder (RUN/onnx) and in a Space
DEFAULT_RUN = Path("models/default")  # what `make demo` builds and every command reads unless told otherwise
DEFAULT_BUNDLE = DEFAULT_RUN / BUNDLE_DIR
MANIFEST = "manifest.json"
VOCAB = "vocab.json"
MODEL_CARD = "README.md"  # the model card (`export.model_card`, read by `demo.model_card`); bundles before it lack it

ENCODER_FILES = {"fp32": "encoder.onnx", "int8": "encoder.int8.onnx"}  # variant -> file
VARIANTS = tuple(ENCODER_FILES)
# The encoders' weights sit beside their graphs as ONNX external data (`encoder.onnx.data`): ONNX Runtime maps
# the file instead of parsing one large protobuf and copying every tensor out of it, which doubled a server's
# memory while it loaded. Bundles exported before this have self-contained encoders and no data files; both load.
EXTERNAL_DATA_SUFFIX = ".data"
# Manifest key: the encoders' fc layers always run on two rows or more (`export.graph_edit._pad_rows`), so the
# fp32 encoder can run without prepacked weights and still give an image the same features in any batch.
PADDED_ROWS = "encoder_padded_rows"
DECODER_STEP = "decoder_step.onnx"  # (features, token, h, c) -> (log_probs, h_out, c_out): the whole step, all V
IMAGE_PROJECTION = "image_projection.onnx"  # features -> image, once per image
# What the runtime runs every step: the whole step minus the image projection, plus the search's row gather in
# front and the banned-token mask and top-k behind (see TOPK_IO). One per decoder variant.
DECODER_TOPK_FILES = {"fp32": "decoder_step_topk.onnx", "int8": "decoder_step_topk.int8.onnx"}

# Graph input and output names.
PIXELS, FEATURES = "pixels", "features"  # uint8 (B, 224, 224, 3) RGB -> float32 (B, 4096) fc2
IMAGE = "image"  # float32 (B, H): the image's projection
TOKEN, H, C = "token", "h", "c"  # int64 (B,), float32 (B, H), float32 (B, H)
LOG_PROBS, H_OUT, C_OUT = "log_probs", "h_out", "c_out"  # float32 (B, V), (B, H), (B, H)
STEP_OUTPUTS = [LOG_PROBS, H_OUT, C_OUT]
# The top-k step: new row r continues previous row ROWS[r] (image, h and c are gathered inside the graph, so the
# state can stay where the session keeps it); BAN (V,) is 0 or -inf per token, added to the log-probabilities
# before the top-k. Outputs: each row's K best log-probabilities (sorted, ties by lower token id) and their ids,
# the <end> token's log-probability, and the gathered image, h and c for the next step.
ROWS, BAN = "rows", "ban"  # int64 (N,), float32 (V,)
TOP_LOG_PROBS, TOP_IDS, END_LOG_PROB, IMAGE_OUT = "top_log_probs", "top_ids", "end_log_prob", "image_out"
TOPK_INPUTS = [IMAGE, TOKEN, H, C, ROWS, BAN]
TOPK_OUTPUTS = [TOP_LOG_PROBS, TOP_IDS, END_LOG_PROB, IMAGE_OUT, H_OUT, C_OUT]

GRAPH_IO = {  # file -> (inputs, outputs), in order
    ENCODER_FILES["fp32"]: ([PIXELS], [FEATURES]),
    ENCODER_FILES["int8"]: ([PIXELS], [FEATURES]),
    DECODER_STEP: ([FEATURES, TOKEN, H, C], STEP_OUTPUTS),
    IMAGE_PROJECTION: ([FEATURES], [IMAGE]),
    DECODER_TOPK_FILES["fp32"]: (TOPK_INPUTS, TOPK_OUTPUTS),
    DECODER_TOPK_FILES["int8"]: (TOPK_INPUTS, TOPK_OUTPUTS),
}
MODEL_KEYS = {  # file -> its key under the manifest's "models"
    ENCODER_FILES["fp32"]: "encoder", ENCODER_FILES["int8"]: "encoder_int8", DECODER_STEP: "decoder_step",
    IMAGE_PROJECTION: "image_projection", DECODER_TOPK_FILES["fp32"]: "decoder_step_topk",
    DECODER_TOPK_FILES["int8"]: "decoder_step_topk_int8",
}


def encoder_file(variant: str) -> str:
    return ENCODER_FILES[variant]


def decoder_file(variant: str) -> str:
    return DECODER_TOPK_FILES[variant]


def external_data(name: str) -> str:
    """The external-data file of a graph (its weights), e.g. encoder.onnx.data."""
    return name + EXTERNAL_DATA_SUFFIX


def model_bytes(path: Path) -> int:
    """A graph's size on disk with its external data, if it has any."""
    data = path.with_name(external_data(path.name))
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def runtime_files(variant: str, decoder_variant: str) -> tuple[str, ...]:
    """What a Captioner of these variants opens besides the manifest (decoder_step.onnx is the export's reference,
    not among them): what the app re-checks before loading a pair, and what a Space ships. The encoder's data
    file is among them; a bundle from before external data lacks it (`optional_file`)."""
    encoder = encoder_file(variant)
    return encoder, external_data(encoder), IMAGE_PROJECTION, decoder_file(decoder_variant), VOCAB


def optional_file(name: str) -> bool:
    """Files a bundle may lack: the encoders' external data (self-contained encoders, exported before it)."""
    return name.endswith(EXTERNAL_DATA_SUFFIX)


def variants_in(files) -> list[str]:
    """The encoder variants a bundle ships, from the names of its files."""
    return [variant for variant, name in ENCODER_FILES.items() if name in files]


def decoder_variants_in(files) -> list[str]:
    """The decoder variants a bundle ships."""
    return [variant for variant, name in DECODER_TOPK_FILES.items() if name in files]
