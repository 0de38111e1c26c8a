"""Parity checks of the exported graphs against Keras, run by the export itself (ONNX Runtime only).

Any check outside its bound fails the export: a bundle that does not caption
like the trained model is never installed. Captions must be identical, except
where the search met a near-tie: two graphs that agree to 1e-4 may choose
differently between words whose scores differ by less than that, and whether a
trained model has such a tie on some test image depends on its weights, and so
on the CPU that trained it. A differing caption passes only if the exported
decoder itself chooses the reference caption once its log-probabilities are
moved by at most TIE_TOLERANCE (a few seeded tries): a real conversion error
is far outside that.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from demo import bundle_layout as layout
from demo.artifacts import read_json
from demo.generation import COMPARED, GENERATION
from demo.onnx_step import OnnxStepModel, WholeStepModel
from demo.search import best, options_for
from demo.search.step import StepModel, StepOutput, TopKStep, top_k
from demo.sessions import create_session
from demo.vocab import Vocabulary
from export.errors import ParityError
from train.evaluate import search_key

ENCODER_RELATIVE_TOLERANCE = 1e-4  # max |onnx - keras| / max |keras|
DECODER_TOLERANCE = 1e-4  # max |onnx - keras| on log-probabilities
TIE_TOLERANCE = 4 * DECODER_TOLERANCE  # log-prob jitter under which a differing caption counts as a near-tie
TIE_TRIES = 8
CHECKED_WIDTHS = (GENERATION.num_beams, COMPARED.num_beams)  # greedy and the app's beam width
# Keras' reference outputs, written by export.tf_side into the work folder, read here, never shipped
REFERENCE_CAPTIONS = "reference_captions.json"
REFERENCE_PIXELS, REFERENCE_FEATURES = "reference_encoder_pixels.npy", "reference_encoder_features.npy"
REFERENCE_TIMING = "reference_encoder_timing.json"  # Keras' seconds per image on the parity images
REFERENCE_DECODER = "reference_decoder.npz"  # probe inputs (graph input names) and outputs (graph output names)
REFERENCE_TEST_FEATURES = "reference_test_features.npy"  # what the trained decoder sees for the test split
REFERENCE_TOP = "reference_top.npz"  # a fine-tuned run's fc1/fc2 (`fc1_kernel`, ...): the Gemm weights


def cpu_session(path: Path):
    """The checks run on the CPU whatever the machine has, with the runtime's own session settings."""
    return create_session(path, "cpu")[0]


def encode(session, pixels: np.ndarray, batch_size: int = 8) -> np.ndarray:
    return np.concatenate([session.run([layout.FEATURES], {layout.PIXELS: pixels[i:i + batch_size]})[0]
                           for i in range(0, len(pixels), batch_size)])


def encoder_parity(work: Path) -> dict:
    pixels = np.load(work / REFERENCE_PIXELS, allow_pickle=False)
    reference = np.load(work / REFERENCE_FEATURES, allow_pickle=False)
    features = encode(cpu_session(work / layout.DEFAULT_ENCODER), pixels)
    scale = float(np.abs(reference).max())
    relative = float(np.abs(features - reference).max()) / max(scale, 1e-12)
    result = {"images": len(pixels), "max_abs_diff_relative_to_feature_scale": relative, "feature_scale": scale,
              "tolerance": ENCODER_RELATIVE_TOLERANCE}
    if not relative <= ENCODER_RELATIVE_TOLERANCE:
        raise ParityError(f"encoder.onnx differs from Keras by {relative:.2e} of the feature scale "
                          f"(allowed {ENCODER_RELATIVE_TOLERANCE:.0e})")
    return result


def decoder_parity(work: Path) -> dict:
    reference = np.load(work / REFERENCE_DECODER, allow_pickle=False)
    inputs, outputs = layout.GRAPH_IO[layout.DECODER_STEP]
    computed = cpu_session(work / layout.DECODER_STEP).run(outputs, {k: reference[k] for k in inputs})
    diffs = {name: float(np.abs(out - reference[name]).max()) for name, out in zip(outputs, computed)}
    if not diffs[layout.LOG_PROBS] <= DECODER_TOLERANCE:
        raise ParityError(f"{layout.DECODER_STEP} log-probabilities differ from Keras by "
                          f"{diffs[layout.LOG_PROBS]:.2e} (allowed {DECODER_TOLERANCE:.0e})")
    return {"rows": int(len(reference[layout.TOKEN])), "max_abs_diff": diffs, "tolerance": DECODER_TOLERANCE}


def decode_all(step: StepModel, features: np.ndarray, vocab: Vocabulary, num_beams: int) -> list[list[int]]:
    options = options_for(vocab, GENERATION.replace(num_beams=num_beams))
    return [list(h.tokens) for h in best(step, features, vocab.start_id, vocab.end_id, options)]


class JitteredStep:
    """A step model whose log-probabilities move by at most `scale`, at random (seeded): another decoder
    that agrees with this one to within `scale`. Each row's top-k is re-sorted after the move."""

    def __init__(self, inner: StepModel, scale: float, seed: int):
        self.inner, self.scale, self.rng = inner, scale, np.random.default_rng(seed)
        self.vocab_size, self.top_k = inner.vocab_size, inner.top_k

    def initial_state(self, features: np.ndarray, banned_ids: tuple[int, ...]):
        return self.inner.initial_state(features, banned_ids)

    def step(self, tokens: np.ndarray, rows: np.ndarray, state):
        out, state = self.inner.step(tokens, rows, state)
        moved = out.top_log_probs + self.rng.uniform(-self.scale, self.scale, out.top_log_probs.shape)
        moved = moved.astype(out.top_log_probs.dtype)
        order = np.lexsort((out.top_ids, -moved), axis=1)
        end = out.end_log_prob + self.rng.uniform(-self.scale, self.scale, out.end_log_prob.shape)
        return StepOutput(np.take_along_axis(moved, order, axis=1), np.take_along_axis(out.top_ids, order, axis=1),
                          end.astype(out.end_log_prob.dtype)), state


def is_near_tie(step, feature: np.ndarray, vocab: Vocabulary, num_beams: int, wanted: list[int]) -> bool:
    """True when `step`, its log-probs jittered by at most TIE_TOLERANCE, decodes `wanted` for this image."""
    return any(decode_all(JitteredStep(step, TIE_TOLERANCE, seed), feature[None], vocab, num_beams)[0] == wanted
               for seed in range(TIE_TRIES))


def compare_captions(step, features: np.ndarray, vocab: Vocabulary, num_beams: int, reference: list[list[int]],
                     got: list[list[int]] | None = None) -> dict:
    """How many of `step`'s captions equal the reference, how many differ by a near-tie, how many really differ."""
    got = decode_all(step, features, vocab, num_beams) if got is None else got
    differing = [i for i, (a, b) in enumerate(zip(got, reference)) if a != b]
    ties = [i for i in differing if is_near_tie(step, features[i], vocab, num_beams, reference[i])]
    return {"identical": len(features) - len(differing), "near_ties": len(ties),
            "different": sorted(set(differing) - set(ties))}


def topk_step_model(work: Path, variant: str = layout.DEFAULT_VARIANT) -> OnnxStepModel:
    return OnnxStepModel(cpu_session(work / layout.decoder_file(variant)), cpu_session(work / layout.IMAGE_PROJECTION))


def whole_step_model(work: Path, end_id: int) -> TopKStep:
    """decoder_step.onnx, the whole distribution, with the ban and top-k done in numpy (the reference)."""
    return TopKStep(WholeStepModel(cpu_session(work / layout.DECODER_STEP)), end_id)


def topk_parity(work: Path, end_id: int) -> dict:
    """The top-k step (projection once, rows gathered, top-k in the graph) against decoder_step.onnx:
    its K values must be the whole step's K best log-probabilities, at the same ids (up to near-ties)."""
    reference = np.load(work / REFERENCE_DECODER, allow_pickle=False)
    inputs, _ = layout.GRAPH_IO[layout.DECODER_STEP]
    whole = cpu_session(work / layout.DECODER_STEP).run(layout.STEP_OUTPUTS, {k: reference[k] for k in inputs})
    topk = topk_step_model(work)
    image = topk.projection.run([layout.IMAGE], {layout.FEATURES: reference[layout.FEATURES]})[0]
    rows = len(reference[layout.TOKEN])
    out = topk.session.run(layout.TOPK_OUTPUTS, {
        layout.IMAGE: image, layout.TOKEN: reference[layout.TOKEN], layout.H: reference[layout.H],
        layout.C: reference[layout.C], layout.ROWS: np.arange(rows, dtype=np.int64),
        layout.BAN: np.zeros(topk.vocab_size, dtype=np.float32)})
    top_log_probs, top_ids, end_log_prob, _, h_out, c_out = out
    expected, _ = top_k(whole[0], topk.top_k)
    at_ids = np.take_along_axis(whole[0], top_ids, axis=1)
    diffs = {"top_log_probs_vs_whole_at_same_ids": float(np.abs(top_log_probs - at_ids).max()),
             "top_log_probs_vs_whole_top_k": float(np.abs(top_log_probs - expected).max()),
             "end_log_prob": float(np.abs(end_log_prob - whole[0][:, end_id]).max()),
             "h_out": float(np.abs(h_out - whole[1]).max()), "c_out": float(np.abs(c_out - whole[2]).max())}
    worst = max(diffs.values())
    if not worst <= DECODER_TOLERANCE:
        raise ParityError(f"the top-k decoder step differs from {layout.DECODER_STEP} by {worst:.2e} "
                          f"({', '.join(f'{k} {v:.1e}' for k, v in diffs.items())}; allowed {DECODER_TOLERANCE:.0e})")
    return {"rows": rows, "top_k": topk.top_k, "max_abs_diff": diffs}


def caption_parity(work: Path, features: np.ndarray, vocab: Vocabulary) -> dict:
    """Greedy and beam captions of the test split, through both decoder forms: identical to Keras', or fail."""
    reference = read_json(work / REFERENCE_CAPTIONS, "Keras reference captions")
    forms = {"decoder_step": whole_step_model(work, vocab.end_id), "topk": topk_step_model(work)}
    result = {"images": len(features), "near_tie_tolerance": TIE_TOLERANCE}
    for form, step in forms.items():
        for width in CHECKED_WIDTHS:
            key = search_key(width)
            compared = compare_captions(step, features, vocab, width, reference[key])
            prefix = key if form == "decoder_step" else f"{form}_{key}"
            result[f"{prefix}_identical"], result[f"{prefix}_near_ties"] = compared["identical"], compared["near_ties"]
            if compared["different"]:
                raise ParityError(f"{len(compared['different'])} of {len(features)} {key} captions differ between "
                                  f"Keras and the exported decoder ({form}), beyond near-ties of {TIE_TOLERANCE:.0e}")
    return result


def read_top(path: Path) -> dict:
    """A fine-tuned run's fc1/fc2 as written by `export.tf_side`: {name: (kernel, bias)}."""
    with np.load(path, allow_pickle=False) as arrays:
        return {name: (arrays[f"{name}_kernel"], arrays[f"{name}_bias"]) for name in ("fc1", "fc2")}


def top_weight_stream(top: dict):
    """(name, kernel, bias) of fc1 and fc2, the stream `append_dense_layers` reads."""
    for name, (kernel, bias) in top.items():
        yield name, kernel, bias
