"""`python -m train evaluate`: corpus BLEU-1..4 per beam width, as papers report it.

Each image is scored against all of its references (NLTK `corpus_bleu`, no
smoothing); with `pycocoevalcap` installed, CIDEr, ROUGE-L and METEOR too.
Beside each score: the same captions scored against the references of
*other* images (a seeded derangement). On a dataset whose captions share
templates (the synthetic one), that baseline shows how much of
the score comes from describing this image rather than from fluent phrasing.

Also per search: caption diversity (distinct captions over the split, and
the share given the single most common one: the "same caption for every
image" failure), and, on the synthetic scenes, what the captions get right
about each scene (`train.scene_scoring`: shape word, colour, size, position,
background), since BLEU on template captions hides a wrong shape word.
"""
from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from demo.artifacts import atomic_write_json
from demo.errors import BadInput, MissingFile
from demo.generation import field_names
from demo.search import best, options_for
from demo.search.step import Hypothesis, SearchOptions, TopKStep
from demo.vocab import Vocabulary
from train.captions_file import read_captions
from train.coco_metrics import coco_scores
from train.config import EvaluateConfig, to_json
from train.keras_step import KerasStepModel
from train.run_features import trained_features
from train.run_files import RunFiles, update_run_config
from train.scene_scoring import load_scenes, summary

log = logging.getLogger(__name__)

BLEU_WEIGHTS = [(1.0,), (0.5, 0.5), (1 / 3, 1 / 3, 1 / 3), (0.25, 0.25, 0.25, 0.25)]


def bleu_scores(references: list[list[list[str]]], hypotheses: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4, unsmoothed as papers report it.

    NLTK warns, in five lines per n, whenever some n-gram order has no match at all (an untrained model):
    the score it returns, 0, already says so, so the warning is dropped.
    """
    from nltk.translate.bleu_score import corpus_bleu

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*The hypothesis contains 0 counts", category=UserWarning)
        return {f"bleu_{n + 1}": float(corpus_bleu(references, hypotheses, weights=w))
                for n, w in enumerate(BLEU_WEIGHTS)}


def derangement(count: int, seed: int) -> np.ndarray:
    """A permutation with no fixed point: every image gets another image's references."""
    if count < 2:
        return np.arange(count)
    order = np.random.default_rng(seed).permutation(count)
    result = np.empty(count, dtype=np.int64)
    result[order] = np.roll(order, 1)
    return result


def caption_diversity(hypotheses: list[list[str]]) -> dict:
    """How many different captions the split got, and how much of it the single most common one covers."""
    counts = Counter(" ".join(h) for h in hypotheses)
    total = len(hypotheses)
    caption, count = counts.most_common(1)[0] if counts else ("", 0)  # ties: the one met first
    return {
        "distinct_captions": len(counts),
        "distinct_share": round(len(counts) / total, 4) if total else None,
        "most_common_caption": caption,
        "most_common_share": round(count / total, 4) if total else None,
    }


def search_key(width: int) -> str:
    return "greedy" if width == 1 else f"beam_{width}"


def caption_split(step_model, features: np.ndarray, vocab: Vocabulary, width: int, options: SearchOptions,
                  batch_size: int) -> list[Hypothesis]:
    found = []
    for start in tqdm(range(0, len(features), batch_size), desc=search_key(width), unit="batch", leave=False):
        found += best(step_model, features[start:start + batch_size], vocab.start_id, vocab.end_id, options)
    return found


def run_evaluate(cfg: EvaluateConfig) -> dict:
    files = RunFiles(Path(cfg.run))
    if not files.model.is_file():
        raise MissingFile(f"no trained model at {files.model}: run `python -m train fit --run {cfg.run}`")
    vocab = Vocabulary.load(files.vocab)
    captions = read_captions(files.captions)
    entries = captions.split(cfg.split)
    if not entries:
        raise BadInput(f"the {cfg.split} split of {files.root} is empty")
    scenes = load_scenes(captions, [e.id for e in entries])  # None: not the synthetic dataset
    if scenes is not None and scenes.not_scored:
        log.warning(f"evaluate: {scenes.not_scored}")
    from train.model import fine_tuned_top, load_trained  # lazy: train.evaluate's helpers serve TF-free callers

    trained = load_trained(files.model)
    features = trained_features(files, [e.id for e in entries], fine_tuned_top(trained))
    references = [e.references() for e in entries]
    shuffled = [references[i] for i in derangement(len(references), cfg.seed)]
    step_model = TopKStep(KerasStepModel(trained), vocab.end_id, top_k=2 * max(cfg.beam))
    metrics = {}
    for width in cfg.beam:
        options = options_for(vocab, cfg.generation(width))
        started = time.perf_counter()
        found = caption_split(step_model, features, vocab, width, options, cfg.batch_size)
        elapsed = time.perf_counter() - started
        hypotheses = [vocab.decode(h.tokens) for h in found]
        scores = bleu_scores(references, hypotheses)
        baseline = bleu_scores(shuffled, hypotheses)
        result = metrics[search_key(width)] = scores | coco_scores(references, hypotheses) | {
            "bleu_4_shuffled_references": baseline["bleu_4"],
            "images": len(entries), "split": cfg.split,
            # the search's options, max_length as the number it was
            **{name: value for name, value in options.to_dict().items() if name in field_names()},
            "seconds": round(elapsed, 2),
            # how long the captions are, and how many the model ended itself rather than being cut at max_length
            "mean_words": round(float(np.mean([len(h.tokens) for h in found])), 2),
            "ended_by_end_share": round(float(np.mean([h.finished for h in found])), 4),
            "diversity": caption_diversity(hypotheses),
            **({} if scenes is None else {"scene": scenes.score(hypotheses)}),  # synthetic scenes only
            "samples": [{"image": e.id, "caption": " ".join(h), "references": list(e.tokens)}
                        for e, h in list(zip(entries, hypotheses))[: cfg.samples]],
        }
        diversity = result["diversity"]
        scene_line = "" if scenes is None else f"; {summary(result['scene'])}"
        log.info(f"evaluate: {search_key(width)}: BLEU-1 {scores['bleu_1']:.3f} BLEU-4 {scores['bleu_4']:.3f} "
                 f"(shuffled references {baseline['bleu_4']:.3f}) on {len(entries)} {cfg.split} images "
                 f"in {elapsed:.1f} s{scene_line}; {diversity['distinct_captions']} distinct captions, "
                 f"the most common on {diversity['most_common_share']:.0%}")
    atomic_write_json(files.metrics, metrics)
    update_run_config(files, "evaluate", to_json(cfg))
    return metrics
