"""The ONNX bundle's layout: its file names, encoder variants and graph input/output names.

The one place these names are written. The export produces them, the runtime
(`Captioner`, `OnnxStepModel`) checks and uses them, the Space export copies
by them and the benchmarks open by them; a graph whose inputs or outputs
differ from `GRAPH_IO` is refused at load.
"""
from __future__ import annotations

BUNDLE_DIR = "onnx"  # the bundle's folder in a run folder (RUN/onnx) and in a Space
MANIFEST = "manifest.json"
VOCAB = "vocab.json"

ENCODER_FILES = {"fp32": "encoder.onnx", "int8": "encoder.int8.onnx"}  # variant -> file
VARIANTS = tuple(ENCODER_FILES)
DECODER_STEP = "decoder_step.onnx"  # (features, token, h, c) -> (log_probs, h_out, c_out)
IMAGE_PROJECTION = "image_projection.onnx"  # features -> image, once per image
DECODER_STEP_IMAGE = "decoder_step_image.onnx"  # (image, token, h, c) -> (log_probs, h_out, c_out), every step
SPLIT_DECODER = (IMAGE_PROJECTION, DECODER_STEP_IMAGE)
DECODER_FILES = (DECODER_STEP, *SPLIT_DECODER)

# Graph input and output names.
PIXELS, FEATURES = "pixels", "features"  # uint8 (B, 224, 224, 3) RGB -> float32 (B, 4096) fc2
IMAGE = "image"  # float32 (B, H): the image's projection
TOKEN, H, C = "token", "h", "c"  # int64 (B,), float32 (B, H), float32 (B, H)
LOG_PROBS, H_OUT, C_OUT = "log_probs", "h_out", "c_out"  # float32 (B, V), (B, H), (B, H)
STEP_OUTPUTS = [LOG_PROBS, H_OUT, C_OUT]

GRAPH_IO = {  # file -> (inputs, outputs), in order
    ENCODER_FILES["fp32"]: ([PIXELS], [FEATURES]),
    ENCODER_FILES["int8"]: ([PIXELS], [FEATURES]),
    DECODER_STEP: ([FEATURES, TOKEN, H, C], STEP_OUTPUTS),
    IMAGE_PROJECTION: ([FEATURES], [IMAGE]),
    DECODER_STEP_IMAGE: ([IMAGE, TOKEN, H, C], STEP_OUTPUTS),
}
MODEL_KEYS = {  # file -> its key under the manifest's "models"
    ENCODER_FILES["fp32"]: "encoder", ENCODER_FILES["int8"]: "encoder_int8", DECODER_STEP: "decoder_step",
    IMAGE_PROJECTION: "image_projection", DECODER_STEP_IMAGE: "decoder_step_image",
}


def encoder_file(variant: str) -> str:
    return ENCODER_FILES[variant]


def variants_in(files) -> list[str]:
    """The encoder variants a bundle ships, from the names of its files."""
    return [variant for variant, name in ENCODER_FILES.items() if name in files]
