"""The exported decoder behind the `demo.search.step.StepModel` interface (ONNX Runtime, no TensorFlow).

Two forms, the same operations:
- `decoder_step.onnx` alone: (features, token, h, c) -> (log_probs, h_out, c_out);
- `image_projection.onnx` + `decoder_step_image.onnx`: the image's projection is
  computed once per image and carried in the state, so each step skips the
  4096 x H image Dense (the largest matrix of a step).
"""
from __future__ import annotations

import numpy as np

from demo import bundle_layout as layout
from demo.manifest import BundleError
from demo.search.step import State


class OnnxStepModel:
    def __init__(self, step_session, projection_session=None):
        self.session, self.projection = step_session, projection_session
        inputs = {i.name: i for i in step_session.get_inputs()}
        self.image_input = layout.IMAGE if projection_session is not None else layout.FEATURES
        if self.image_input not in inputs:
            raise BundleError(f"the decoder graph has no {self.image_input!r} input (inputs: {list(inputs)})")
        self.hidden_dim = int(inputs[layout.H].shape[-1])
        self.vocab_size = int(step_session.get_outputs()[0].shape[-1])

    def initial_state(self, features: np.ndarray) -> State:
        features = np.ascontiguousarray(features, dtype=np.float32)
        if self.projection is None:
            image = features
        else:
            image = self.projection.run([layout.IMAGE], {layout.FEATURES: features})[0]
        zeros = np.zeros((len(features), self.hidden_dim), dtype=np.float32)
        return {self.image_input: image, layout.H: zeros, layout.C: zeros.copy()}

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        log_probs, h, c = self.session.run(layout.STEP_OUTPUTS, {**state, layout.TOKEN: tokens.astype(np.int64)})
        return log_probs, {self.image_input: state[self.image_input], layout.H: h, layout.C: c}
