"""The step model is the training model, one word at a time."""
import numpy as np
import pytest

from train.model import ModelSpec, build_step_model, build_training_model


@pytest.fixture(scope="module")
def models():
    trained = build_training_model(ModelSpec(vocab_size=40, embed_dim=24, hidden_dim=16, feature_scale=0.01))
    return trained, build_step_model(trained)


def test_step_model_reproduces_teacher_forced_log_probs(models):
    trained, step = models
    rng = np.random.default_rng(0)
    features = rng.normal(0, 100, (3, 4096)).astype(np.float32)
    words = np.array([[1, 5, 7, 9, 2, 0], [1, 8, 2, 0, 0, 0], [1, 4, 4, 6, 11, 2]], dtype=np.int32)
    logits = trained.predict_on_batch({"features": features, "words": words})
    expected = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    h = np.zeros((3, 16), np.float32)
    c = np.zeros((3, 16), np.float32)
    for t in range(words.shape[1]):
        log_probs, h, c = step.predict_on_batch({"features": features, "token": words[:, t], "h": h, "c": c})
        live = words[:, t] != 0
        np.testing.assert_allclose(log_probs[live], expected[live, t], atol=1e-5)


def test_step_model_shares_weights_with_the_trained_model(models):
    trained, step = models
    kernel = trained.get_layer("logits").kernel
    assert any(w is kernel for w in step.weights)
    assert step.output_shape[0] == (None, 40)


def test_padding_does_not_change_earlier_predictions(models):
    trained, _ = models
    features = np.ones((1, 4096), np.float32)
    short = trained.predict_on_batch({"features": features, "words": np.array([[1, 5, 2]], np.int32)})
    padded = trained.predict_on_batch({"features": features, "words": np.array([[1, 5, 2, 0, 0]], np.int32)})
    np.testing.assert_allclose(short[0], padded[0, :3], atol=1e-6)
