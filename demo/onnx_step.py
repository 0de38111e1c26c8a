"""The exported decoder behind the `demo.search.step.StepModel` interface (ONNX Runtime, no TensorFlow).

Serving runs two graphs: `image_projection.onnx` once per image (features ->
image, the 4096 x H Dense), then `decoder_step_topk.onnx` every step. The top-k
step gathers the rows the search asks for, masks banned words and returns only
each row's K best words and the `<end>` log-probability, so a step hands back
(N, K) instead of (N, V). The state (image, h, c) stays in ONNX Runtime values
bound to the session (IO binding): each step's outputs are the next step's
inputs, never copied to numpy; on CUDA they stay on the GPU and only the top-k
comes back.

`WholeStepModel` is `decoder_step.onnx` (the whole distribution), for the
export's checks against Keras; wrap it in `demo.search.step.TopKStep` to search.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from demo import bundle_layout as layout
from demo.manifest import BundleError
from demo.search.step import State, StepOutput, ban_mask
from demo.sessions import usable_cores

CUDA_PROVIDER = "CUDAExecutionProvider"
LARGE_OUTPUT_LAYER = 1 << 20  # weights in the H x V output layer from which a step is worth several threads


def step_threads(vocab_size: int, hidden_size: int) -> int:
    """Threads for the decoder step's session: one for a small vocabulary, every usable core for a large one.

    A step's cost at Flickr scale is reading the H x V output layer, which one core does at its memory bandwidth
    whatever the number of rows, so splitting it over the cores pays. With a small vocabulary the matrices are
    too small to split and idle pools spinning beside the other sessions cost more than they give. (The decoding
    benchmark times the step with the count chosen here; a comparison of counts is not one of its rows yet.)
    """
    return usable_cores() if vocab_size * hidden_size >= LARGE_OUTPUT_LAYER else 1


class OnnxStepModel:
    def __init__(self, step_session, projection_session):
        self.session, self.projection = step_session, projection_session
        inputs = {i.name: i for i in step_session.get_inputs()}
        outputs = {o.name: o for o in step_session.get_outputs()}
        missing = [n for n in layout.TOPK_INPUTS if n not in inputs] + [n for n in layout.TOPK_OUTPUTS
                                                                         if n not in outputs]
        if missing:
            raise BundleError(f"the decoder step graph lacks {missing}: it is not a top-k step of this project")
        self.hidden_dim = int(inputs[layout.H].shape[-1])
        self.vocab_size = int(inputs[layout.BAN].shape[-1])
        self.top_k = int(outputs[layout.TOP_IDS].shape[-1])
        self.device = "cuda" if step_session.get_providers()[0] == CUDA_PROVIDER else "cpu"

    def _on_device(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def initial_state(self, features: np.ndarray, banned_ids: tuple[int, ...]) -> State:
        """The image projection once per image; then one IO binding for the whole search (its own, so
        concurrent searches on one session never share it)."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        image = self.projection.run([layout.IMAGE], {layout.FEATURES: features})[0]
        zeros = np.zeros((len(features), self.hidden_dim), dtype=np.float32)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(layout.BAN, self._on_device(ban_mask(self.vocab_size, banned_ids)))
        return {"binding": binding, layout.IMAGE: self._on_device(image), layout.H: self._on_device(zeros),
                layout.C: self._on_device(zeros)}

    def step(self, tokens: np.ndarray, rows: np.ndarray, state: State) -> tuple[StepOutput, State]:
        binding = state["binding"]
        for name in (layout.IMAGE, layout.H, layout.C):
            binding.bind_ortvalue_input(name, state[name])
        binding.bind_cpu_input(layout.TOKEN, np.ascontiguousarray(tokens, dtype=np.int64))
        binding.bind_cpu_input(layout.ROWS, np.ascontiguousarray(rows, dtype=np.int64))
        binding.clear_binding_outputs()  # the row count changes: ORT allocates fresh outputs each step
        for name in (layout.TOP_LOG_PROBS, layout.TOP_IDS, layout.END_LOG_PROB):
            binding.bind_output(name, "cpu")  # what the search reads: (N, K), (N, K), (N,)
        for name in (layout.IMAGE_OUT, layout.H_OUT, layout.C_OUT):
            binding.bind_output(name, self.device)  # the next step's state, left where it is
        self.session.run_with_iobinding(binding)
        top_log_probs, top_ids, end_log_prob, image, h, c = binding.get_outputs()
        return (StepOutput(top_log_probs.numpy(), top_ids.numpy(), end_log_prob.numpy()),
                {"binding": binding, layout.IMAGE: image, layout.H: h, layout.C: c})


    def word_log_probs(self, features: np.ndarray, start_id: int, targets: list[int]) -> np.ndarray:
        """Teacher forcing: each row's log-probability of `targets[t]` after `targets[:t]`, (rows, len(targets)).

        Every row follows the same words, so one step call per word serves all rows; the step's ban input lets
        through only that word, whose value is then the top-1, as exact as the search's own (the ban is added
        after the log-softmax, so it renormalises nothing)."""
        state = self.initial_state(features, ())
        rows = np.arange(len(features), dtype=np.int64)
        tokens = np.full(len(features), start_id, dtype=np.int64)
        found = np.empty((len(features), len(targets)), dtype=np.float64)
        for t, target in enumerate(targets):
            only = np.full(self.vocab_size, -np.inf, dtype=np.float32)
            only[target] = 0.0
            state["binding"].bind_ortvalue_input(layout.BAN, self._on_device(only))
            output, state = self.step(tokens, rows, state)
            found[:, t] = output.top_log_probs[:, 0]
            tokens = np.full(len(features), target, dtype=np.int64)
        return found


class WholeStepModel:
    """decoder_step.onnx: (features, token, h, c) -> (log_probs over all V, h, c); numpy state."""

    def __init__(self, session):
        self.session = session
        self.hidden_dim = int(session.get_inputs()[2].shape[-1])
        self.vocab_size = int(session.get_outputs()[0].shape[-1])

    def initial_state(self, features: np.ndarray) -> dict[str, np.ndarray]:
        zeros = np.zeros((len(features), self.hidden_dim), dtype=np.float32)
        return {layout.FEATURES: np.ascontiguousarray(features, dtype=np.float32), layout.H: zeros,
                layout.C: zeros.copy()}

    def step(self, tokens: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        log_probs, h, c = self.session.run(layout.STEP_OUTPUTS, {**state, layout.TOKEN: tokens.astype(np.int64)})
        return log_probs, {layout.FEATURES: state[layout.FEATURES], layout.H: h, layout.C: c}
