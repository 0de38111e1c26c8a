"""A bundle's model card (`README.md`, written by `python -m export`): its text and its one-line summary.

Why: the app's page says in one line what the loaded model was trained on and what it can describe, so a
newcomer who uploads a photo to the synthetic default does not wonder why it talks about shapes, and links to
the whole card. The card's first blockquote line is that summary, in a fixed form (`export.model_card` writes
it with the marks below):

    > **Trained on** 3,000 synthetic scenes (...) **· describes** shapes, their colours, sizes and positions ...

TensorFlow- and Gradio-free. Usage (the page's whole need):

    card = read_model_card(bundle)   # None: a bundle exported before cards existed
    if card: show card.summary (Markdown) or card.plain_summary, and link to card.path

The card is listed in the bundle's manifest, so `verify_bundle` checks its sha256 like any file's; this reader
does not check it again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from demo.bundle_layout import MODEL_CARD

SUMMARY_MARK = "**Trained on**"  # the summary's two bold labels: the parse anchors, and the renderer's words
DESCRIBES_MARK = "**· describes**"


@dataclass(frozen=True)
class ModelCard:
    path: Path  # BUNDLE/README.md
    text: str  # the whole card, Markdown
    summary: str | None  # the first blockquote line without its "> ", Markdown kept; None: the card has none

    @property
    def plain_summary(self) -> str | None:
        """The summary without Markdown bold marks ("Trained on 3,000 ... · describes shapes ..."): for plain text."""
        return None if self.summary is None else self.summary.replace("**", "")


def read_model_card(bundle: str | os.PathLike) -> ModelCard | None:
    """The card of the bundle folder `bundle`, or None when it has none (exported before cards existed)."""
    path = Path(bundle) / MODEL_CARD
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    return ModelCard(path=path, text=text, summary=parse_summary(text))


def parse_summary(text: str) -> str | None:
    """The first blockquote line (`> ...`) of a card, without the `> `; None when there is none."""
    for line in text.splitlines():
        if line.startswith(">"):
            return line[1:].strip() or None
    return None
