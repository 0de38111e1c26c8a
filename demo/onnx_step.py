"""The exported decoder step behind the `demo.step.StepModel` interface (ONNX Runtime, no TensorFlow)."""
from __future__ import annotations

import numpy as np

from demo.step import State


class OnnxStepModel:
    """`decoder_step.onnx`: (features, token, h, c) -> (log_probs, h_out, c_out), any batch size."""

    def __init__(self, session):
        self.session = session
        inputs = {i.name: i for i in session.get_inputs()}
        self.hidden_dim = int(inputs["h"].shape[-1])
        self.vocab_size = int(session.get_outputs()[0].shape[-1])

    def initial_state(self, features: np.ndarray) -> State:
        zeros = np.zeros((len(features), self.hidden_dim), dtype=np.float32)
        return {"features": np.ascontiguousarray(features, dtype=np.float32), "h": zeros, "c": zeros.copy()}

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        log_probs, h, c = self.session.run(
            ["log_probs", "h_out", "c_out"],
            {"features": state["features"], "token": tokens.astype(np.int64), "h": state["h"], "c": state["c"]},
        )
        return log_probs, {"features": state["features"], "h": h, "c": c}
