"""The Keras step model behind the `demo.step.StepModel` interface, for evaluation without ONNX."""
from __future__ import annotations

import numpy as np

from demo.bundle_layout import C, FEATURES, H, TOKEN
from demo.step import State
from train.tf_import import import_keras


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

    @classmethod
    def load(cls, path) -> "KerasStepModel":
        keras = import_keras()
        import train.model  # noqa: F401  (lazy, as above; importing it registers the custom layers for loading)

        return cls(keras.models.load_model(path))

    def initial_state(self, features: np.ndarray) -> State:
        zeros = np.zeros((len(features), self.hidden_dim), dtype=np.float32)
        return {FEATURES: np.asarray(features, dtype=np.float32), H: zeros, C: zeros.copy()}

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        log_probs, h, c = self._call({FEATURES: state[FEATURES], TOKEN: tokens.astype(np.int32), H: state[H],
                                      C: state[C]})
        return log_probs.numpy(), {FEATURES: state[FEATURES], H: h.numpy(), C: c.numpy()}
