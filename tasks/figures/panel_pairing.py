"""Detected panels (tasks/figures/panel_detect.py) paired with their subcaptions
(tasks/figures/panels.py): a pure function.

A panel takes the subcaption of its label where its label is known (the letter drawn in it,
read by tasks/figures/panel_labels.py under figures.panel_labels: ocr); where it is not, the
panels in reading order take the subcaptions in caption order, which needs the counts to agree. Every panel also carries the caption's shared part.
Where labels, counts or confidence disagree the figure stays whole, with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_CONFIDENCE = 0.3  # below it a detection is a guess: the figure stays whole

# why a figure stays whole (counted in the stage summary as panels_whole_<reason>)
NOT_COMPOUND = "not_compound"
COUNT_MISMATCH = "count_mismatch"
LABEL_MISMATCH = "label_mismatch"
LOW_CONFIDENCE = "low_confidence"


@dataclass(frozen=True)
class PairedPanel:
    label: str
    box: tuple[int, int, int, int]
    confidence: float
    method: str
    subcaption: str
    shared_caption: str
    label_method: str = "order"  # ocr: its drawn letter was read; order: labelled by reading order


@dataclass(frozen=True)
class Pairing:
    panels: list[PairedPanel]  # empty when the figure stays whole
    reason: str | None  # why it stays whole; None when split


def pair_panels(detected: list, subcaptions: list[dict], shared_caption: str,
                labels: list[str | None] | None = None, min_confidence: float = MIN_CONFIDENCE) -> Pairing:
    """detected: DetectedPanel-like (box, confidence, method) in reading order; subcaptions:
    [{"panel": "A", "text": ...}] in caption order; labels: each panel's drawn label where
    read (None or absent: unknown)."""
    if len(subcaptions) < 2:
        return Pairing([], NOT_COMPOUND)
    if len(detected) != len(subcaptions):
        return Pairing([], COUNT_MISMATCH)
    if min(p.confidence for p in detected) < min_confidence:
        return Pairing([], LOW_CONFIDENCE)
    texts = {s["panel"]: s["text"] for s in subcaptions}
    labels = list(labels) if labels else [None] * len(detected)
    read = [bool(label) for label in labels]
    if any(labels):
        known = [label for label in labels if label]
        if len(set(known)) != len(known) or not set(known) <= set(texts):
            return Pairing([], LABEL_MISMATCH)
        # panels without a read label take the remaining subcaptions in order
        rest = iter(s["panel"] for s in subcaptions if s["panel"] not in set(known))
        labels = [label or next(rest) for label in labels]
    else:
        labels = [s["panel"] for s in subcaptions]
    return Pairing([PairedPanel(label, tuple(p.box), p.confidence, p.method, texts[label], shared_caption,
                                "ocr" if was_read else "order")
                    for label, p, was_read in zip(labels, detected, read)], None)
