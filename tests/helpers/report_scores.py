"""Derived report labels against reference 0/1 labels: per-label P/R/F1, macro-F1."""
from __future__ import annotations

from typing import Mapping, Sequence


def score_labels(reference: Sequence[Mapping[str, int]], predicted: Sequence[Mapping[str, int]],
                 labels: Sequence[str]) -> dict:
    per_label = {}
    for label in labels:
        tp = fp = fn = 0
        for ref, pred in zip(reference, predicted):
            r, p = int(ref[label]) == 1, int(pred.get(label, 0)) == 1
            tp += r and p
            fp += p and not r
            fn += r and not p
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                            "support": tp + fn, "tp": tp, "fp": fp, "fn": fn}
    macro = sum(v["f1"] for v in per_label.values()) / max(1, len(per_label))
    return {"n": len(reference), "macro_f1": round(macro, 4), "per_label": per_label}


def heldout(key: str, fraction: float = 0.25, salt: str = "split_reports-heldout") -> bool:
    """The hash-chosen part kept aside while the rules were written."""
    from tasks.common.hashing import stable_fraction

    return stable_fraction(key, salt) < fraction
