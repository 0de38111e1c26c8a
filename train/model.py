"""The merge captioner (as in the seed) and its single-step twin.

Training model: ([features (B, 4096), words (B, T)]) -> logits (B, T, V).
    features -> Rescaling -> Dropout -> Dense(H, relu)            (image)
    words -> Embedding(E, masked) -> Dropout -> LSTM(H)           (language)
    image + language (at every time step) -> Dense(H, relu) -> Dense(V)

Step model: (features (B, 4096), token (B,), h (B, H), c (B, H)) ->
(log_probs (B, V), h', c'). It calls the *same layer objects*, so it shares the
trained weights by construction rather than by copying.

`feature_scale` (1 / RMS of the training features) is a Rescaling layer inside
the model: ImageNet fc2 features are O(1) while a random-init VGG16's are
O(100), and the exported graph must see the same scaling as training did.
"""
from __future__ import annotations

from dataclasses import dataclass

from demo import bundle_layout as layout
from demo.errors import DamagedFile
from train.encoder import FEATURE_DIM
from train.tf_import import import_keras

keras = import_keras()


@keras.saving.register_keras_serializable(package="captioner")
class AddImageToSequence(keras.layers.Layer):
    """Add the image vector (B, H) to every time step of the LSTM output (B, T, H), keeping the word mask."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        sequence, image = inputs
        return sequence + keras.ops.expand_dims(image, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else mask[0]


@keras.saving.register_keras_serializable(package="captioner")
class SqueezeTime(keras.layers.Layer):
    """(B, 1, H) -> (B, H) for the one-step LSTM output; a single step has no padding to mask."""

    def call(self, inputs):
        return keras.ops.squeeze(inputs, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None


def load_trained(path) -> "keras.Model":
    """A saved captioner (`model.keras`, a checkpoint); a damaged file is a user error that names the fix."""
    try:
        return keras.models.load_model(path)
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DamagedFile(f"{path} is not a readable Keras model ({first}); train again with "
                          "`python -m train fit`") from exc


@dataclass(frozen=True)
class ModelSpec:
    vocab_size: int
    embed_dim: int = 256
    hidden_dim: int = 256
    dropout: float = 0.3
    feature_scale: float = 1.0


def build_training_model(spec: ModelSpec):
    layers = keras.layers
    features = keras.Input((FEATURE_DIM,), name="features")
    words = keras.Input((None,), dtype="int32", name="words")
    scaled = layers.Rescaling(spec.feature_scale, name="feature_scale")(features)
    image = layers.Dropout(spec.dropout, name="image_dropout")(scaled)
    image = layers.Dense(spec.hidden_dim, activation="relu", name="image_dense")(image)
    embedded = layers.Embedding(spec.vocab_size, spec.embed_dim, mask_zero=True, name="embedding")(words)
    embedded = layers.Dropout(spec.dropout, name="word_dropout")(embedded)
    sequence, _, _ = layers.LSTM(spec.hidden_dim, return_sequences=True, return_state=True, name="lstm")(embedded)
    merged = AddImageToSequence(name="merge")([sequence, image])
    hidden = layers.Dense(spec.hidden_dim, activation="relu", name="decoder_dense")(merged)
    logits = layers.Dense(spec.vocab_size, name="logits")(hidden)
    return keras.Model([features, words], logits, name="captioner")


def build_step_model(trained):
    """The one-word step of `trained`, sharing its layers (no dropout: inference only)."""
    layers = keras.layers
    hidden_dim = trained.get_layer("lstm").units
    # the step model's input and output names are the exported decoder's (export.tf_side keeps them)
    features = keras.Input((FEATURE_DIM,), name=layout.FEATURES)
    token = keras.Input((), dtype="int32", name=layout.TOKEN)
    h = keras.Input((hidden_dim,), name=layout.H)
    c = keras.Input((hidden_dim,), name=layout.C)
    image = trained.get_layer("image_dense")(trained.get_layer("feature_scale")(features))
    embedded = trained.get_layer("embedding")(layers.Reshape((1,), name="token_as_sequence")(token))
    output, h_out, c_out = trained.get_layer("lstm")(embedded, initial_state=[h, c])
    merged = layers.Add(name="merge_step")([SqueezeTime(name="last_step")(output), image])
    logits = trained.get_layer("logits")(trained.get_layer("decoder_dense")(merged))
    log_probs = layers.Activation("log_softmax", name=layout.LOG_PROBS)(logits)
    return keras.Model([features, token, h, c], [log_probs, h_out, c_out], name="decoder_step")
