"""CIDEr, ROUGE-L and METEOR from `pycocoevalcap`, when it is installed (METEOR also needs Java).

Optional: BLEU is the seed's and the contract's metric; these are what COCO
leaderboards add. Captions are scored as our normalised tokens, joined by
spaces (not re-tokenised by the Java PTB tokenizer, which would need Java for
every metric).
"""
from __future__ import annotations

import shutil


def available() -> bool:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return False
    return True


def coco_scores(references: list[list[list[str]]], hypotheses: list[list[str]]) -> dict[str, float]:
    """Corpus scores keyed `cider`, `rouge_l` and (with Java) `meteor`; empty without pycocoevalcap."""
    if not available():
        return {}
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h) or "<empty>"] for i, h in enumerate(hypotheses)}
    scores = {"cider": float(Cider().compute_score(gts, res)[0]), "rouge_l": float(Rouge().compute_score(gts, res)[0])}
    if shutil.which("java"):
        from pycocoevalcap.meteor.meteor import Meteor

        scores["meteor"] = float(Meteor().compute_score(gts, res)[0])  # its __del__ stops the Java process
    return scores
