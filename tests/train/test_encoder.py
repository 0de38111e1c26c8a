"""Our zero-initialised VGG16 is keras.applications.VGG16, layer for layer, and loads the same weight files."""
import h5py
import numpy as np
import pytest

from train.encoder import EncoderSpec, build_encoder, load_vgg16, vgg16_weights
from train.tf_import import import_keras


@pytest.mark.slow
def test_local_keras_h5_weights_load_like_keras_applications(tmp_path):
    """A legacy Keras .h5 (the ImageNet file's format) gives the same model in ours and in Keras' VGG16."""
    keras = import_keras()
    from keras.src.legacy.saving import legacy_h5_format

    reference = load_vgg16(EncoderSpec("none", seed=3))
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    ours = load_vgg16(EncoderSpec(str(path)))
    theirs = keras.applications.VGG16(weights=str(path), include_top=True)
    assert [layer.name for layer in ours.layers][1:] == [layer.name for layer in theirs.layers][1:]
    for mine, keras_layer in zip(ours.layers, theirs.layers):
        for a, b in zip(mine.get_weights(), keras_layer.get_weights()):
            np.testing.assert_array_equal(a, b)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    encoder = build_encoder(EncoderSpec(str(path)))
    fc2 = keras.Model(theirs.inputs, theirs.get_layer("fc2").output)
    bgr = pixels[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    np.testing.assert_allclose(encoder.predict_on_batch(pixels), fc2.predict_on_batch(bgr), rtol=1e-4, atol=1e-3)
    assert EncoderSpec(str(path)).describe().startswith("file:vgg16_weights_tf_dim_ordering_tf_kernels.h5:sha256=")


def test_random_init_is_drawn_from_its_seed_alone():
    """Export rebuilds the encoder from the seed (in another process: the shared build's encoder parity proves it
    end to end); here, without building VGG16, the weights stream depends on the seed and nothing else."""
    def first_layers(seed: int) -> list[np.ndarray]:
        stream = vgg16_weights(EncoderSpec("none", seed))
        return [next(stream)[1] for _ in range(2)]

    for a, b in zip(first_layers(0), first_layers(0)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first_layers(0)[1], first_layers(1)[1])
