"""Decoding one caption (20 words at most), image features given: where the search's time goes.

Sides, all on the same trained weights and the same images (ONNX Runtime
sides interleaved with each other, then the TensorFlow sides with each other):
- seed loop: the seed's recipe, the full Keras model re-run with `predict` on
  the padded prefix for every word, and the word found by a linear search of
  the word index;
- Keras step model, greedy (our step interface over Keras);
- ONNX Runtime greedy, with the image projection computed once per image (the
  runtime's split decoder) and, for comparison, every step (decoder_step.onnx);
  ONNX Runtime beam 5 with every beam in one decoder call per step; and the
  same beam search calling the decoder once per beam.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.timing import interleaved
from demo import bundle_layout as layout
from demo.onnx_step import OnnxStepModel
from demo.search import options_for
from demo.search.beam_search import beam_search
from demo.search.greedy_search import greedy_search
from demo.sessions import create_session
from demo.vocab import SPECIAL_TOKENS, Vocabulary
from train.captions_file import read_captions
from train.features import load_cache
from train.keras_step import KerasStepModel
from train.run_files import RunFiles
from train.tf_import import import_keras

MAX_WORDS = 20  # the benchmarks' caption cap (decoding here, the served requests in bench.serving_load)
FLICKR_VOCAB = 8485  # Flickr30K words seen >= 5 times, as in the spike the targets come from


class PerRowStepModel:
    """The same decoder, called once per hypothesis: what batching the beams saves."""

    def __init__(self, inner):
        self.inner, self.vocab_size = inner, inner.vocab_size

    def initial_state(self, features):
        return self.inner.initial_state(features)

    def step(self, tokens, state):
        outputs = [self.inner.step(tokens[i:i + 1], {k: v[i:i + 1] for k, v in state.items()})
                   for i in range(len(tokens))]
        log_probs = np.concatenate([o[0] for o in outputs])
        return log_probs, {k: np.concatenate([o[1][k] for o in outputs]) for k in state}


def seed_loop(model, feature: np.ndarray, word_index: dict[str, int], vocab) -> list[str]:
    """The seed's greedy decoding, kept faithful: predict on the whole padded prefix, linear word lookup."""
    words, sequence = [], [vocab.start_id]
    for _ in range(MAX_WORDS + 1):
        padded = np.array([sequence + [0] * (MAX_WORDS + 1 - len(sequence))], dtype=np.int32)
        logits = model.predict({"features": feature[None], "words": padded}, verbose=0)
        token = int(np.argmax(logits[0, len(sequence) - 1]))
        word = next((w for w, index in word_index.items() if index == token), None)
        if word is None or token == vocab.end_id:
            break
        words.append(word)
        sequence.append(token)
    return words


def measure(run: Path, quick: bool = False, provider: str = "cpu") -> dict:
    """The default run's trained decoder on its test images."""
    files = RunFiles(run)
    bundle = files.bundle
    if not (bundle / layout.DECODER_STEP_IMAGE).is_file():
        return {"name": "decoding", "skipped": f"no exported bundle in {bundle}"}
    test_ids = read_captions(files.captions).ids("test")
    features = load_cache(files).lookup(test_ids[: 3 if quick else 8])
    return {"name": "decoding", **_measure(bundle, files.model, Vocabulary.load(files.vocab), features, quick,
                                           provider)}


def measure_flickr_scale(quick: bool = False, provider: str = "cpu") -> dict:
    """A Flickr-sized decoder (V=8485, random weights): the vocabulary size the targets were set at."""
    with tempfile.TemporaryDirectory(prefix="bench-flickr-decoder-") as tmp:
        subprocess.run([sys.executable, "-m", "bench.flickr_scale_model", "--out", tmp], check=True,
                       capture_output=True, text=True)
        vocab = Vocabulary(SPECIAL_TOKENS + tuple(f"w{i}" for i in range(FLICKR_VOCAB - 4)), max_length=MAX_WORDS)
        features = np.random.default_rng(0).normal(0, 100, (3 if quick else 8, 4096)).astype(np.float32)
        return {"name": "decoding_flickr_scale", **_measure(Path(tmp), Path(tmp) / "model.keras", vocab, features,
                                                            quick, provider)}


def _measure(bundle: Path, keras_model: Path, vocab, features: np.ndarray, quick: bool,
             provider: str) -> dict:
    whole_step = OnnxStepModel(create_session(bundle / layout.DECODER_STEP, provider, threads=1)[0])
    image_step, used = create_session(bundle / layout.DECODER_STEP_IMAGE, provider, threads=1)
    projection, _ = create_session(bundle / layout.IMAGE_PROJECTION, provider, threads=1)
    ort_step = OnnxStepModel(image_step, projection)
    greedy, beam5 = options_for(vocab, 1, MAX_WORDS), options_for(vocab, 5, MAX_WORDS)

    def each_image(search, model, options):
        def run_all() -> int:
            for feature in features:
                search(model, feature[None], vocab.start_id, vocab.end_id, options)
            return len(features)
        return run_all

    repeats = 2 if quick else 3
    # ONNX Runtime first, before TensorFlow has run anything: measured here, one Keras `predict` leaves
    # ORT in the same process about 2.7x slower for good, and a deployment never has TensorFlow loaded.
    ort_sides = {
        "ort_greedy_projection_every_step": each_image(greedy_search, whole_step, greedy),
        "ort_greedy": each_image(greedy_search, ort_step, greedy),
        "ort_beam5_batched": each_image(beam_search, ort_step, beam5),
        "ort_beam5_per_beam_calls": each_image(beam_search, PerRowStepModel(ort_step), beam5),
    }
    rates = interleaved(ort_sides, repeats, warm_up=True)
    rates |= interleaved(_keras_sides(keras_model, features, vocab, greedy), repeats, warm_up=True)
    ms = {name: 1000.0 / r["median_per_s"] for name, r in rates.items()}
    return {
        "provider": used,
        "vocab_size": len(vocab),
        "hidden_size": ort_step.hidden_dim,
        "images": len(features),
        "ms_per_caption": ms,
        "ratios": {
            "seed_loop_to_ort_greedy": ms["seed_loop"] / ms["ort_greedy"],
            "per_beam_to_batched_beam5": ms["ort_beam5_per_beam_calls"] / ms["ort_beam5_batched"],
        },
        "targets": {"seed_loop_to_ort_greedy_at_least": 300, "per_beam_to_batched_at_least": 3,
                    "beam5_ms_at_most": 5},
    }


def _keras_sides(model_path: Path, features: np.ndarray, vocab, greedy) -> dict:
    keras = import_keras()  # TensorFlow only now, after the ONNX Runtime sides (it slows ORT in its process)
    import train.model  # noqa: F401  (lazy, for the same reason; importing it registers the custom layers)

    trained = keras.models.load_model(model_path)
    keras_step = KerasStepModel(trained)
    word_index = {word: index for index, word in enumerate(vocab.tokens)}

    def seed() -> int:
        for feature in features:
            seed_loop(trained, feature, word_index, vocab)
        return len(features)

    def keras_greedy() -> int:
        for feature in features:
            greedy_search(keras_step, feature[None], vocab.start_id, vocab.end_id, greedy)
        return len(features)

    return {"seed_loop": seed, "keras_step_greedy": keras_greedy}
