"""The vocabulary and its file format (`vocab.json`).

The file is plain JSON so that a deployment can read it without pickle and a
person can inspect it. Index 0 is always padding, so masked Keras layers and
the ONNX decoder agree on what "no word" is.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from demo.artifacts import atomic_write_json, read_json
from demo.errors import CaptionerError
from demo.text import NORMALIZATION_VERSION

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)
FORMAT = "vgg16-lstm-captioner/vocab"
FORMAT_VERSION = 1


class VocabularyError(CaptionerError, ValueError):
    """A vocabulary file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Vocabulary:
    tokens: tuple[str, ...]
    max_length: int
    min_count: int = 1
    normalization: str = NORMALIZATION_VERSION
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise VocabularyError(f"vocabulary must start with {SPECIAL_TOKENS}")
        index = {token: i for i, token in enumerate(self.tokens)}
        if len(index) != len(self.tokens):
            raise VocabularyError("vocabulary has duplicate tokens")
        object.__setattr__(self, "_index", index)

    pad_id = 0
    start_id = 1
    end_id = 2
    unk_id = 3

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, word: str) -> bool:
        return word in self._index

    def id_of(self, word: str) -> int:
        return self._index.get(word, self.unk_id)

    def encode(self, words: Sequence[str], add_special: bool = True) -> list[int]:
        """Word ids, truncated to `max_length` words; unknown words map to `<unk>`."""
        ids = [self.id_of(w) for w in words[: self.max_length]]
        return [self.start_id, *ids, self.end_id] if add_special else ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first `<end>`; padding and `<start>` are skipped."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return words

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "normalization": self.normalization,
            "max_length": self.max_length,
            "min_count": self.min_count,
            "size": len(self.tokens),
            "special": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
            "tokens": list(self.tokens),
        }

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike, expected_size: int | None = None) -> "Vocabulary":
        """Load and check `vocab.json`; `expected_size` guards against a vocabulary from another model."""
        path = Path(path)
        try:
            data = read_json(path, "vocabulary")
        except (FileNotFoundError, ValueError) as exc:
            raise VocabularyError(f"{exc}. Rebuild it with `python -m train prepare`.") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
            raise VocabularyError(f"{path} is not a {FORMAT} v{FORMAT_VERSION} file")
        try:
            vocab = cls(
                tokens=tuple(data["tokens"]),
                max_length=int(data["max_length"]),
                min_count=int(data.get("min_count", 1)),
                normalization=str(data.get("normalization", NORMALIZATION_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VocabularyError(f"{path} is damaged: {exc!s}") from exc
        if data.get("size", len(vocab)) != len(vocab):
            raise VocabularyError(f"{path} says size {data['size']} but lists {len(vocab)} tokens")
        if expected_size is not None and len(vocab) != expected_size:
            raise VocabularyError(
                f"{path} has {len(vocab)} tokens but the model expects {expected_size}: "
                "the vocabulary and the model come from different runs"
            )
        return vocab


@dataclass
class VocabularyStats:
    words_total: int
    words_kept: int
    tokens_seen: int
    tokens_unknown: int
    captions: int
    captions_truncated: int

    def to_json(self) -> dict:
        return self.__dict__ | {
            "unknown_rate": self.tokens_unknown / max(1, self.tokens_seen),
        }


def build_vocabulary(
    captions: Iterable[Sequence[str]],
    min_count: int = 5,
    max_length: int = 30,
    max_size: int | None = None,
) -> tuple[Vocabulary, VocabularyStats]:
    """Count words over tokenised training captions and keep the frequent ones.

    Words are ordered by count (then alphabetically) so the file is stable for
    the same data; `max_size` caps the vocabulary including special tokens.
    """
    captions = list(captions)
    counts = Counter(word for words in captions for word in words)
    kept = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIAL_TOKENS),
                  key=lambda w: (-counts[w], w))
    if max_size is not None:
        kept = kept[: max(0, max_size - len(SPECIAL_TOKENS))]
    vocab = Vocabulary(tokens=SPECIAL_TOKENS + tuple(kept), max_length=max_length, min_count=min_count)
    seen = sum(counts.values())
    stats = VocabularyStats(
        words_total=len(counts),
        words_kept=len(kept),
        tokens_seen=seen,
        tokens_unknown=sum(n for w, n in counts.items() if w not in vocab),
        captions=len(captions),
        captions_truncated=sum(1 for words in captions if len(words) > max_length),
    )
    return vocab, stats
