"""Which PDF figure is which JATS figure: label numbers and caption token overlap."""
from __future__ import annotations

import re
import unicodedata
from collections import Counter

from tasks.figures.pdf_figures import PdfFigure

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text or "").lower()
    return _TOKEN.findall(text)


def token_overlap(reference: str, candidate: str) -> float:
    """Share of the reference's tokens (with multiplicity) found in the candidate."""
    ref = Counter(_tokens(reference))
    if not ref:
        return 0.0
    got = Counter(_tokens(candidate))
    return sum((ref & got).values()) / sum(ref.values())


def link_to_jats(pdf_figures: list[PdfFigure], jats: list[tuple[str, str | None, str]],
                 min_overlap: float = 0.5) -> dict[int, tuple[str, float]]:
    """Match PDF figures to JATS figures (fig_id, label number, caption) by label and caption text.

    Returns pdf index -> (fig_id, caption overlap). Same label number with a plausible caption
    wins; otherwise the best caption overlap of at least 0.8. One JATS figure per PDF figure.
    """
    scored = []
    for i, pdf in enumerate(pdf_figures):
        for fig_id, number, caption in jats:
            overlap = min(token_overlap(caption, pdf.caption), token_overlap(pdf.caption, caption))
            same_label = number is not None and number == pdf.number
            if (same_label and overlap >= min_overlap) or overlap >= 0.8:
                scored.append((not same_label, -overlap, i, fig_id))
    links: dict[int, tuple[str, float]] = {}
    used: set[str] = set()
    for _, negative, i, fig_id in sorted(scored):
        if i in links or fig_id in used:
            continue
        links[i] = (fig_id, -negative)
        used.add(fig_id)
    return links
