"""The ONNX bundle's layout: its file names, variants and graph input/output names.

The one place these names are written. The export produces them, the runtime
(`Captioner`, `OnnxStepModel`) checks and uses them, the Space export copies
by them and the benchmarks open by them; a graph whose inputs or outputs
differ from `GRAPH_IO` is refused at load.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from demo.session_memory import MemoryOptions

BUNDLE_DIR = "onnx"  # the bundle's folder in a run folder (RUN/onnx) and in a Space
DEFAULT_RUN = Path("models/default")  # what `make demo` builds and every command reads unless told otherwise
DEFAULT_BUNDLE = DEFAULT_RUN / BUNDLE_DIR
MANIFEST = "manifest.json"
VOCAB = "vocab.json"
MODEL_CARD = "README.md"  # the model card (`export.model_card`, read by `demo.model_card`); bundles before it lack it

# The encoders' weights sit beside their graphs as ONNX external data (`encoder.onnx.data`): ONNX Runtime maps
# the file instead of parsing one large protobuf and copying every tensor out of it, which doubled a server's
# memory while it loaded. Bundles exported before this have self-contained encoders and no data files; both load.
EXTERNAL_DATA_SUFFIX = ".data"
# Manifest key: the encoders' fc layers always run on two rows or more (`export.graph_edit._pad_rows`), so the
# fp32 encoder can run without prepacked weights and still give an image the same features in any batch.
PADDED_ROWS = "encoder_padded_rows"
DECODER_STEP = "decoder_step.onnx"  # (features, token, h, c) -> (log_probs, h_out, c_out): the whole step, all V
IMAGE_PROJECTION = "image_projection.onnx"  # features -> image, once per image


@dataclass(frozen=True)
class Variant:
    """One export variant: its files and their manifest keys, how its encoder's session holds memory, and what
    users are told about it. Every list of variants (the runtime's, the CLI's choices, the export's `--quantize`,
    the Space's, the model card's) derives from `VARIANT_TABLE`, so a new variant is one row here."""

    name: str
    encoder: str | None  # the encoder graph (pixels -> features), or None for a variant of the decoder only
    decoder: str | None  # the top-k decoder step (TOPK_INPUTS -> TOPK_OUTPUTS), or None for an encoder only
    encoder_key: str | None  # their keys under the manifest's "models"
    decoder_key: str | None
    # The encoder session's memory in a bundle whose fc layers run on padded rows (`PADDED_ROWS`); older bundles
    # get `UNPADDED_ENCODER_MEMORY`, since without the padding their features would depend on the batch.
    encoder_memory: MemoryOptions
    weight_bits: int  # bits per weight: the Space ships the fewest the bundle has (the smallest files)
    summary: str  # what the model card and the Space say about it, after its name
    quantized: bool  # made by `python -m export --quantize NAME` (and then only where it passes its gate)

    def __post_init__(self):
        if (self.encoder is None) != (self.encoder_key is None) or (self.decoder is None) != (self.decoder_key is None):
            raise ValueError(f"variant {self.name}: each graph needs both its file and its manifest key")

    def parity_key(self, graph: str) -> str:
        """A quantized variant's figures against fp32 under the manifest's `parity`, for graph `encoder` or
        `decoder`: `encoder_int8`, `decoder_int8`."""
        return f"{graph}_{self.name}"

    def hint(self) -> str:
        """How a user gets this variant into a bundle that lacks it."""
        return f"export with --quantize {self.name}" if self.quantized else "export again (python -m export)"


# No arena anywhere: a batched pass's activations go back to the system after the pass instead of staying
# reserved. fp32 without prepacking: ONNX Runtime would otherwise keep a second, repacked copy of the fc weights
# beside the mapped file, for a small cost at batch 1; its fc layers always see two rows or more, so features stay
# the same in any batch. int8 keeps prepacking: its integer kernels are much slower without it, and its weights are
# a quarter the size. The serving benchmark (`python -m bench --only serving`) measures what this saves.
VARIANT_TABLE = (
    Variant("fp32", "encoder.onnx", "decoder_step_topk.onnx", "encoder", "decoder_step_topk",
            MemoryOptions(arena=False, prepack=False), 32, "float32 weights, as trained", quantized=False),
    Variant("int8", "encoder.int8.onnx", "decoder_step_topk.int8.onnx", "encoder_int8", "decoder_step_topk_int8",
            MemoryOptions(arena=False), 8, "int8 weights, a quarter the size", quantized=True),
)
UNPADDED_ENCODER_MEMORY = MemoryOptions(arena=False)
VARIANT_BY_NAME = {variant.name: variant for variant in VARIANT_TABLE}
ENCODER_FILES = {v.name: v.encoder for v in VARIANT_TABLE if v.encoder}  # variant -> file
DECODER_TOPK_FILES = {v.name: v.decoder for v in VARIANT_TABLE if v.decoder}
VARIANTS = tuple(ENCODER_FILES)  # the encoder variants (`--variant`)
DECODER_VARIANTS = tuple(DECODER_TOPK_FILES)  # the decoder variants (`--decoder-variant`)
DEFAULT_VARIANT = VARIANT_TABLE[0].name  # what a Captioner, the CLI and the page use unless told otherwise
QUANTIZED = tuple(v.name for v in VARIANT_TABLE if v.quantized)  # `python -m export --quantize` choices

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
    **{name: ([PIXELS], [FEATURES]) for name in ENCODER_FILES.values()},
    DECODER_STEP: ([FEATURES, TOKEN, H, C], STEP_OUTPUTS),
    IMAGE_PROJECTION: ([FEATURES], [IMAGE]),
    **{name: (TOPK_INPUTS, TOPK_OUTPUTS) for name in DECODER_TOPK_FILES.values()},
}
MODEL_KEYS = {  # file -> its key under the manifest's "models", in the manifest's order
    **{v.encoder: v.encoder_key for v in VARIANT_TABLE if v.encoder}, DECODER_STEP: "decoder_step",
    IMAGE_PROJECTION: "image_projection", **{v.decoder: v.decoder_key for v in VARIANT_TABLE if v.decoder},
}
if not len(set(MODEL_KEYS.values())) == len(MODEL_KEYS) == len(GRAPH_IO) == len(VARIANTS + DECODER_VARIANTS) + 2:
    raise ImportError("demo.bundle_layout: two variants share a file or a manifest key")  # a row copied, not edited
if DEFAULT_VARIANT not in VARIANTS or DEFAULT_VARIANT not in DECODER_VARIANTS:
    raise ImportError("demo.bundle_layout: the table's first variant is every default, so it needs both graphs")
# The default variant's graphs: what the export converts first and quantizes from, and checks against Keras.
DEFAULT_ENCODER, DEFAULT_DECODER = ENCODER_FILES[DEFAULT_VARIANT], DECODER_TOPK_FILES[DEFAULT_VARIANT]


def get_variant(name: str) -> Variant:
    """The table's row for `name`; a name not in it is a ValueError naming the ones there are."""
    if name not in VARIANT_BY_NAME:
        raise ValueError(f"unknown variant {name!r}: one of {', '.join(VARIANTS)}")
    return VARIANT_BY_NAME[name]


def encoder_file(name: str) -> str:
    if name not in ENCODER_FILES:
        raise ValueError(f"no encoder variant {name!r}: one of {', '.join(VARIANTS)}")
    return ENCODER_FILES[name]


def decoder_file(name: str) -> str:
    if name not in DECODER_TOPK_FILES:
        raise ValueError(f"no decoder variant {name!r}: one of {', '.join(DECODER_VARIANTS)}")
    return DECODER_TOPK_FILES[name]


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
    return [name for name, file in ENCODER_FILES.items() if file in files]


def decoder_variants_in(files) -> list[str]:
    """The decoder variants a bundle ships."""
    return [name for name, file in DECODER_TOPK_FILES.items() if file in files]


def preferred(names: list[str]) -> str:
    """The default variant where `names` has it, else the first: what the page starts with and the card shows."""
    return DEFAULT_VARIANT if DEFAULT_VARIANT in names or not names else names[0]


def smallest(names: list[str]) -> str:
    """The variant of `names` with the fewest bits per weight (the default when `names` is empty): the Space's
    `auto`."""
    return min(names, key=lambda name: get_variant(name).weight_bits, default=DEFAULT_VARIANT)
