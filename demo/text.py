"""Caption text normalisation, shared by training, evaluation and serving.

No NLTK data is needed: captions are lowercased, apostrophes are dropped
("man's" -> "mans", "don't" -> "dont") and every other non-alphanumeric
character separates words. Every word is kept, one-letter words included:
"a" appears in almost every human reference, and dropping it costs BLEU.
"""
from __future__ import annotations

import re
import unicodedata

NORMALIZATION_VERSION = "lower-nopunct-v1"

_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc`]")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def tokenize(caption: str) -> list[str]:
    """Split a raw caption into normalised words (may be empty)."""
    text = unicodedata.normalize("NFKC", caption).lower()
    text = _APOSTROPHES.sub("", text)
    return _NON_WORD.sub(" ", text).split()


def normalize(caption: str) -> str:
    """The normalised caption as one space-separated string."""
    return " ".join(tokenize(caption))
