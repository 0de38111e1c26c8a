"""The Keras step model behind the `demo.search.step.StepModel` interface, for evaluation without ONNX."""
from __future__ import annotations

import numpy as np

from demo import bundle_layout as layout
from demo.search.step import State


class KerasStepModel:
    """State: the image features (constant per row) and the LSTM's h and c."""

    def __init__(self, trained=None, step_model=None):
        # lazy: TensorFlow and train.model (which imports it) load only when a Keras model is used, so that
        # train.evaluate's helpers (BLEU, search keys) serve the TF-free export process as well
        import tensorflow as tf

        from train.model import build_step_model

        self.model = step_model if step_model is not None else build_step_model(trained)
        self.vocab_size = int(self.model.outputs[0].shape[-1])
        self.hidden_dim = int(self.model.inputs[2].shape[-1])
        self._call = tf.function(lambda inputs: self.model(inputs, training=False), reduce_retracing=True)

    def initial_state(self, features: np.ndarray) -> State:
        zeros = np.zeros((len(features), self.hidden_dim), dtype=np.float32)
        return {layout.FEATURES: np.asarray(features, dtype=np.float32), layout.H: zeros, layout.C: zeros.copy()}

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        features = state[layout.FEATURES]
        inputs = {layout.FEATURES: features, layout.TOKEN: tokens.astype(np.int32), layout.H: state[layout.H],
                  layout.C: state[layout.C]}
        log_probs, h, c = self._call(inputs)
        return log_probs.numpy(), {layout.FEATURES: features, layout.H: h.numpy(), layout.C: c.numpy()}
