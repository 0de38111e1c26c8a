"""Decoding captions, image features given: how fast, and where a caption's time goes.

Two decoders, each measured on its own held-out images:
- the trained default run (synthetic scenes, V = 59);
- the Flickr-scale decoder (`bench.flickr_scale_model`: the real Flickr8k vocabulary and captions,
  stand-in image features, trained), built when its run is absent.

Sides, all on the same weights and images (ONNX Runtime sides interleaved with each other, then the
TensorFlow sides with each other):
- seed loop: the seed's recipe, the full Keras model re-run with `predict` on the padded prefix for
  every word, and the word found by a linear search of the word index;
- Keras step model, greedy (our step interface over Keras, top-k in numpy);
- ONNX Runtime greedy and beam 5, one image per search, on the runtime's top-k step (fp32, and int8
  where the bundle ships it); 16 images in one beam-3 search; and greedy over decoder_step.onnx with
  the whole distribution brought back to numpy (what the top-k step saves).
Also: one step of a beam-5 batch (6 rows), int8 against fp32; and where a beam-5 caption's time goes
(inside session calls vs the search's own numpy).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.effort import pick
from bench.timing import interleaved
from demo import bundle_layout as layout
from demo.artifacts import read_json
from demo.generation import GenerationConfig
from demo.onnx_step import OnnxStepModel, WholeStepModel, step_threads
from demo.search import best, options_for
from demo.search.beam_search import beam_search
from demo.search.greedy_search import greedy_search
from demo.search.step import TopKStep
from demo.sessions import create_session
from demo.vocab import Vocabulary
from export.decoder_int8 import quantize_decoder, step_ms
from train.captions_file import read_captions
from train.feature_cache import load_cache
from train.keras_step import KerasStepModel
from train.run_files import RunFiles
from train.tf_import import import_keras

MAX_WORDS = 20  # the benchmarks' caption cap (decoding here, the served requests in bench.serving_load)
BATCH_IMAGES = 16  # images decoded together in the batched beam-3 side
TARGETS = {
    "decoding": {"beam5_ms_at_most": 3},
    "decoding_flickr_scale": {"seed_loop_to_ort_greedy_at_least": 300, "beam5_ms_at_most": 5,
                              "batch16_beam3_ms_at_most": 1.5, "int8_step_ratio_at_most": 0.6},
}


class TimedStep:
    """A step model that adds up the time spent inside its `step` calls (the session's share of a search)."""

    def __init__(self, inner):
        self.inner, self.vocab_size, self.top_k = inner, inner.vocab_size, inner.top_k
        self.seconds, self.calls = 0.0, 0

    def initial_state(self, features, banned_ids):
        return self.inner.initial_state(features, banned_ids)

    def step(self, tokens, rows, state):
        started = time.perf_counter()
        result = self.inner.step(tokens, rows, state)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return result


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


def measure(run: Path, effort: str = "full", provider: str = "cpu", name: str = "decoding") -> dict:
    """A trained run's exported decoder on its test images."""
    files = RunFiles(run)
    if not (files.bundle / layout.decoder_file("fp32")).is_file():
        return {"name": name, "skipped": f"no exported bundle with a top-k decoder in {files.bundle}"}
    test_ids = read_captions(files.captions).ids("test")
    features = load_cache(files).lookup(test_ids[: max(BATCH_IMAGES, pick(effort, 2, 3, 8))])
    entry = {"name": name, **_measure(files, Vocabulary.load(files.vocab), features, effort, provider)}
    entry["targets"] = TARGETS[name]
    entry["met"] = _met(entry)
    return entry


def measure_flickr_scale(flickr_run: Path, captions: Path | None, effort: str = "full",
                         provider: str = "cpu") -> dict:
    """The Flickr-scale decoder, built first when its run has no bundle (minutes: see bench.flickr_scale_model)."""
    from bench.flickr_scale_model import ensure_built  # lazy: TensorFlow runs in its child processes only

    report = ensure_built(flickr_run, captions)
    if report is None:
        return {"name": "decoding_flickr_scale", "skipped": f"no Flickr-scale decoder in {flickr_run} and no "
                f"captions file to build it from (--flickr-captions PATH/Flickr8k.token.txt)"}
    entry = measure(flickr_run, effort, provider, name="decoding_flickr_scale")
    return entry | {"decoder": report, "evaluate_beam_3_images_per_s": _evaluate_rate(RunFiles(flickr_run))}


def _evaluate_rate(files: RunFiles) -> float | None:
    """`train evaluate`'s beam-3 decoding rate on the test split (Keras step model), from its metrics.json."""
    beam = read_json(files.metrics, "metrics").get("beam_3", {})
    return beam["images"] / beam["seconds"] if beam.get("seconds") else None


def _quantized(bundle: Path, folder: Path) -> Path:
    """The int8 step the export would ship, made here when the export left it out (its gate is about captions;
    its speed is measured either way)."""
    path = folder / layout.decoder_file("int8")
    quantize_decoder(bundle / layout.decoder_file("fp32"), path)
    return path


def _measure(files: RunFiles, vocab: Vocabulary, features: np.ndarray, effort: str, provider: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-int8-decoder-") as tmp:
        return _measure_in(files, vocab, features, effort, provider, Path(tmp))


def _measure_in(files: RunFiles, vocab: Vocabulary, features: np.ndarray, effort: str, provider: str,
                tmp: Path) -> dict:
    bundle = files.bundle
    projection, used = create_session(bundle / layout.IMAGE_PROJECTION, provider, threads=1)
    manifest = read_json(bundle / layout.MANIFEST, "manifest")
    threads = step_threads(len(vocab), manifest["hidden_size"])
    shipped = layout.decoder_file("int8") in manifest["files"]
    int8_file = bundle / layout.decoder_file("int8") if shipped else _quantized(bundle, tmp)
    steps = {v: OnnxStepModel(create_session(path, provider, threads)[0], projection)
             for v, path in (("fp32", bundle / layout.decoder_file("fp32")), ("int8", int8_file))}
    whole = TopKStep(WholeStepModel(create_session(bundle / layout.DECODER_STEP, provider, threads)[0]), vocab.end_id)
    greedy, beam3, beam5 = (options_for(vocab, GenerationConfig(num_beams=width, max_length=MAX_WORDS))
                            for width in (1, 3, 5))
    one_by_one = features[: pick(effort, 2, 3, 8)]

    def each_image(search, model, options):
        def run_all() -> int:
            for feature in one_by_one:
                search(model, feature[None], vocab.start_id, vocab.end_id, options)
            return len(one_by_one)
        return run_all

    def batch(model, options):
        def run_batch() -> int:
            beam_search(model, features[:BATCH_IMAGES], vocab.start_id, vocab.end_id, options)
            return BATCH_IMAGES
        return run_batch

    repeats = pick(effort, 1, 2, 5)
    # ONNX Runtime first, before TensorFlow has run anything: one Keras `predict` leaves ORT in the same process
    # slower for good (TensorFlow's thread pools stay), and a deployment never has TensorFlow loaded.
    ort_sides = {"ort_greedy_whole_distribution_to_numpy": each_image(greedy_search, whole, greedy)}
    for variant, step in steps.items():
        suffix = "" if variant == "fp32" else "_int8"
        ort_sides |= {f"ort_greedy{suffix}": each_image(greedy_search, step, greedy),
                      f"ort_beam5{suffix}": each_image(beam_search, step, beam5),
                      f"ort_beam3_{BATCH_IMAGES}_images{suffix}": batch(step, beam3)}
    rates = interleaved(ort_sides, repeats, warm_up=True)
    breakdown = _where_time_goes(steps["fp32"], one_by_one, vocab, beam5)
    step_times = step_ms(steps, features[:1], repeats=pick(effort, 20, 200, 200), warm_up=10)  # one image: 6 rows
    captions = _caption_stats(steps["fp32"], features, vocab, greedy, beam5)
    rates |= interleaved(_keras_sides(files.model, one_by_one, vocab, greedy), pick(effort, 1, 1, 2), warm_up=True)
    ms = {name: 1000.0 / r["median_per_s"] for name, r in rates.items()}
    ratios = {"seed_loop_to_ort_greedy": ms["seed_loop"] / ms["ort_greedy"],
              "whole_distribution_to_topk_greedy": ms["ort_greedy_whole_distribution_to_numpy"] / ms["ort_greedy"]}
    ratios["int8_to_fp32_step"] = step_times["int8"] / step_times["fp32"]
    return {"provider": used, "vocab_size": len(vocab), "hidden_size": steps["fp32"].hidden_dim,
            "step_threads": threads, "top_k": steps["fp32"].top_k, "decoder_variants": list(steps),
            "int8_shipped": shipped, "images": len(one_by_one),
            "ms_per_caption": ms, "step_ms_beam5_rows": step_times, "ratios": ratios,
            "beam5_time_split_ms_per_caption": breakdown, "captions": captions}


def _where_time_goes(step: OnnxStepModel, features: np.ndarray, vocab: Vocabulary, options) -> dict:
    """Beam 5, one image at a time: ms per caption inside session calls, and outside them (the search's numpy)."""
    timed = TimedStep(step)
    totals = []
    for _ in range(3):
        timed.seconds, timed.calls = 0.0, 0
        started = time.perf_counter()
        for feature in features:
            beam_search(timed, feature[None], vocab.start_id, vocab.end_id, options)
        totals.append((time.perf_counter() - started, timed.seconds, timed.calls))
    total, inside, calls = sorted(totals)[1]  # the median round
    per = 1000.0 / len(features)
    return {"total": total * per, "session_calls": inside * per, "search_numpy": (total - inside) * per,
            "steps_per_caption": calls / len(features)}


def _caption_stats(step: OnnxStepModel, features: np.ndarray, vocab: Vocabulary, greedy, beam5) -> dict:
    """What the timed captions are like: mean words, and how many ended by <end> rather than at 20 words."""
    stats = {}
    for name, options in (("greedy", greedy), ("beam_5", beam5)):
        found = best(step, features, vocab.start_id, vocab.end_id, options)
        stats[name] = {"mean_words": float(np.mean([len(h.tokens) for h in found])),
                       "ended_by_end_token": float(np.mean([h.finished for h in found]))}
    return stats


def _met(entry: dict) -> dict:
    ms, ratios, targets = entry["ms_per_caption"], entry["ratios"], entry["targets"]
    met = {"beam5_ms": ms["ort_beam5"] <= targets["beam5_ms_at_most"]}
    if "seed_loop_to_ort_greedy_at_least" in targets:
        seed_target = targets["seed_loop_to_ort_greedy_at_least"]
        met["seed_loop_to_ort_greedy"] = ratios["seed_loop_to_ort_greedy"] >= seed_target
        met["batch16_beam3_ms"] = ms[f"ort_beam3_{BATCH_IMAGES}_images"] <= targets["batch16_beam3_ms_at_most"]
        met["int8_step_ratio"] = ratios.get("int8_to_fp32_step", np.inf) <= targets["int8_step_ratio_at_most"]
    return met


def _keras_sides(model_path: Path, features: np.ndarray, vocab, greedy) -> dict:
    keras = import_keras()  # TensorFlow only now, after the ONNX Runtime sides (it slows ORT in its process)
    import train.model  # noqa: F401  (lazy, for the same reason; importing it registers the custom layers)

    trained = keras.models.load_model(model_path)
    keras_step = TopKStep(KerasStepModel(trained), vocab.end_id)
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
