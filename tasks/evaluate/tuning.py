"""Choices made on the validation split: every candidate scored there, the best one kept.

The test split is never scored here; evaluate scores it once, with the choice.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable


def grid(options: dict[str, list]) -> list[dict]:
    """Every combination of the listed values, in the params' order (the first is the default)."""
    keys = list(options)
    return [dict(zip(keys, values)) for values in itertools.product(*(options[k] for k in keys))]


@dataclass
class Tuning:
    chosen: dict
    scored: list[dict]  # {"candidate", "validation_macro_auc"} per candidate, in order
    units: int          # validation articles or patients behind the scores
    items: int          # validation figures or studies

    def record(self, what: str) -> dict:
        return {"split": "validation", "criterion": what, "validation_units": self.units,
                "validation_items": self.items, "candidates": self.scored, "chosen": self.chosen}


def choose(candidates: list[dict], score: Callable[[int, dict], float | None], units: int, items: int,
           section: str) -> Tuning:
    """The candidate with the best validation score, score(position, candidate) (ties: the first
    listed). A single candidate is taken as given; several with no score anywhere are an error,
    not a guess."""
    if len(candidates) == 1:
        return Tuning(candidates[0], [{"candidate": candidates[0], "validation_macro_auc": None}], units, items)
    scored = [{"candidate": c, "validation_macro_auc": score(i, c)} for i, c in enumerate(candidates)]
    ranked = [(s["validation_macro_auc"], -i) for i, s in enumerate(scored) if s["validation_macro_auc"] is not None]
    if not ranked:
        raise ValueError(f"{section}: {len(candidates)} candidates but the validation split ({units} units, {items} "
                         f"items) has nothing to score them on (no label with enough positives and a negative): "
                         f"raise split.validation_fraction, or list one candidate per key")
    _, best = max(ranked)
    return Tuning(candidates[-best], scored, units, items)
