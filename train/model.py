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

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from demo import bundle_layout as layout
from demo.errors import DamagedFile, MissingFile
from train.encoder import FEATURE_DIM, POOL_DIM, TOP_LAYERS
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
        raise _unreadable(path, exc) from exc


def _unreadable(path, exc: Exception) -> DamagedFile:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return DamagedFile(f"{path} is not a readable Keras model ({first}); train again with `python -m train fit`")


@dataclass(frozen=True)
class ModelSpec:
    vocab_size: int
    embed_dim: int = 256
    hidden_dim: int = 256
    dropout: float = 0.3
    feature_scale: float = 1.0


@keras.saving.register_keras_serializable(package="captioner")
class ScaledDense(keras.layers.Dense):
    """A Dense layer that trains at `lr_multiplier` times the optimizer's learning rate.

    Adam's step does not depend on the scale of a gradient, so a weight stored as W / m and used as m * (W / m)
    moves m times as far per step as a plain one: a learning rate of its own inside the one optimizer. One
    optimizer keeps what the run already relies on: one optimizer state in `last.keras` for `--resume`, the
    mirrored strategy, the learning-rate schedule (which halves both rates together).
    """

    def __init__(self, units, lr_multiplier: float = 1.0, **kwargs):
        super().__init__(units, **kwargs)
        self.lr_multiplier = float(lr_multiplier)

    def call(self, inputs):
        scale = self.lr_multiplier
        outputs = keras.ops.matmul(inputs, self.kernel * scale) + self.bias * scale
        return self.activation(outputs)

    def get_config(self):
        return super().get_config() | {"lr_multiplier": self.lr_multiplier}

    def set_effective_weights(self, kernel, bias) -> None:
        self.kernel.assign(kernel / self.lr_multiplier)
        self.bias.assign(bias / self.lr_multiplier)

    def effective_weights(self) -> tuple:
        """(kernel, bias) as the layer applies them: what the exported encoder's Gemm nodes take."""
        scale = self.lr_multiplier
        return (keras.ops.convert_to_numpy(self.kernel) * scale, keras.ops.convert_to_numpy(self.bias) * scale)


@keras.saving.register_keras_serializable(package="captioner")
class RepeatPerCaption(keras.layers.Layer):
    """(B, D) image vectors -> (B * C, D): each image's vector once per caption, after the image passed fc1/fc2
    once."""

    def __init__(self, captions_per_image: int, **kwargs):
        super().__init__(**kwargs)
        self.captions_per_image = captions_per_image

    def call(self, inputs):
        return keras.ops.repeat(inputs, self.captions_per_image, axis=0)

    def get_config(self):
        return super().get_config() | {"captions_per_image": self.captions_per_image}


@keras.saving.register_keras_serializable(package="captioner")
class FlattenCaptions(keras.layers.Layer):
    """(B, C, ...) -> (B * C, ...) and back (`inverse`): captions grouped by image, flattened for the LSTM."""

    def __init__(self, captions_per_image: int, inverse: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.captions_per_image, self.inverse = captions_per_image, inverse

    def call(self, inputs):
        shape = keras.ops.shape(inputs)
        if self.inverse:
            return keras.ops.reshape(inputs, (-1, self.captions_per_image, *shape[1:]))
        return keras.ops.reshape(inputs, (-1, *shape[2:]))

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return super().get_config() | {"captions_per_image": self.captions_per_image, "inverse": self.inverse}


def saved_layer_names(path: Path) -> set[str]:
    """The layer names a saved `.keras` model declares, read from its config: no TensorFlow graph, no weights."""
    if not Path(path).is_file():
        raise MissingFile(f"{path}: no such model file; give a `model.keras` that `python -m train fit` saved")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
        return {layer["config"]["name"] for layer in config["config"]["layers"]}
    except (OSError, zipfile.BadZipFile, KeyError, TypeError, ValueError) as exc:
        raise _unreadable(path, exc) from exc


def fine_tuned_top(trained) -> dict | None:
    """fc1's and fc2's trained (kernel, bias) when `trained` fine-tuned VGG16's top, else None (frozen fc2)."""
    names = {layer.name for layer in trained.layers}
    if not set(TOP_LAYERS) <= names:
        return None
    return {name: trained.get_layer(name).effective_weights() for name in TOP_LAYERS}


def build_training_model(spec: ModelSpec):
    features = keras.Input((FEATURE_DIM,), name="features")
    words = keras.Input((None,), dtype="int32", name="words")
    return keras.Model([features, words], _caption_logits(spec, features, words), name="captioner")


def build_fine_tune_model(spec: ModelSpec, top: dict, captions_per_image: int, lr_multiplier: float):
    """([block5_pool (B, 25088), words (B, C, T)]) -> logits (B, C, T, V), fc1 and fc2 trainable from `top`.

    Each image passes through fc1 and fc2 once per step, then its fc2 vector serves its C captions; the layers
    after fc2 are the frozen-feature model's, by name, so `build_step_model` works on either.
    """
    pool = keras.Input((POOL_DIM,), name="block5_pool")
    words = keras.Input((captions_per_image, None), dtype="int32", name="words")
    x = pool
    for name in TOP_LAYERS:
        layer = ScaledDense(FEATURE_DIM, activation="relu", lr_multiplier=lr_multiplier, name=name)
        x = layer(x)
        layer.set_effective_weights(*top[name])
    per_caption = RepeatPerCaption(captions_per_image, name="repeat_per_caption")(x)
    flat_words = FlattenCaptions(captions_per_image, name="flatten_captions")(words)
    logits = _caption_logits(spec, per_caption, flat_words)
    grouped = FlattenCaptions(captions_per_image, inverse=True, name="group_captions")(logits)
    return keras.Model([pool, words], grouped, name="captioner_fine_tune_top")


def _caption_logits(spec: ModelSpec, features, words):
    layers = keras.layers
    scaled = layers.Rescaling(spec.feature_scale, name="feature_scale")(features)
    image = layers.Dropout(spec.dropout, name="image_dropout")(scaled)
    image = layers.Dense(spec.hidden_dim, activation="relu", name="image_dense")(image)
    embedded = layers.Embedding(spec.vocab_size, spec.embed_dim, mask_zero=True, name="embedding")(words)
    embedded = layers.Dropout(spec.dropout, name="word_dropout")(embedded)
    sequence, _, _ = layers.LSTM(spec.hidden_dim, return_sequences=True, return_state=True, name="lstm")(embedded)
    merged = AddImageToSequence(name="merge")([sequence, image])
    hidden = layers.Dense(spec.hidden_dim, activation="relu", name="decoder_dense")(merged)
    return layers.Dense(spec.vocab_size, name="logits")(hidden)


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
