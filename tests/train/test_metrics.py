"""Evaluation metrics on real caption text: BLEU via NLTK, and the shuffled-reference baseline."""
import numpy as np
import pytest

from demo.text import tokenize
from train import coco_metrics
from train.evaluate import bleu_scores, derangement


def real_references(shared_flickr8k, count=40):
    """The first `count` images' five human captions from the real Flickr8k token file."""
    by_image: dict[str, list[list[str]]] = {}
    for line in (shared_flickr8k / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines():
        name, caption = line.split("#", 1)
        by_image.setdefault(name, []).append(tokenize(caption[2:]))
        if len(by_image) > count:
            break
    return list(by_image.values())[:count]


@pytest.mark.filterwarnings("ignore::UserWarning:nltk.translate.bleu_score")  # shuffled baseline: no 4-gram overlap
def test_bleu_on_real_flickr8k_captions(shared_flickr8k):
    references = real_references(shared_flickr8k)
    # Leave-one-out: each image's first caption as the "hypothesis" against its other four.
    hypotheses = [refs[0] for refs in references]
    held_out = [refs[1:] for refs in references]
    scores = bleu_scores(held_out, hypotheses)
    assert 1.0 > scores["bleu_1"] > scores["bleu_2"] > scores["bleu_3"] > scores["bleu_4"] > 0.0
    assert 0.45 < scores["bleu_1"] < 0.9  # human-vs-human BLEU-1 on Flickr8k is around 0.6-0.7
    shuffled = [held_out[i] for i in derangement(len(held_out), seed=0)]
    assert bleu_scores(shuffled, hypotheses)["bleu_4"] < scores["bleu_4"] / 2
    assert bleu_scores(held_out, [refs[1] for refs in held_out])["bleu_4"] == pytest.approx(1.0)


def test_derangement_moves_every_image():
    for count in (2, 3, 10, 101):
        order = derangement(count, seed=count)
        assert sorted(order) == list(range(count)) and not np.any(order == np.arange(count))


@pytest.mark.skipif(not coco_metrics.available(), reason="pycocoevalcap is not installed (optional extra)")
def test_coco_metrics_reward_the_right_caption():
    references = [[["a", "red", "circle", "on", "the", "left"], ["a", "big", "red", "circle"]],
                  [["a", "small", "blue", "square"], ["a", "blue", "square", "at", "the", "top"]]]
    right = coco_metrics.coco_scores(references, [["a", "red", "circle", "on", "the", "left"],
                                                  ["a", "small", "blue", "square"]])
    wrong = coco_metrics.coco_scores(references, [["a", "small", "blue", "square"],
                                                  ["a", "red", "circle", "on", "the", "left"]])
    for metric in ("cider", "rouge_l") + (("meteor",) if "meteor" in right else ()):
        assert right[metric] > wrong[metric], metric
