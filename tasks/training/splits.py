"""Deterministic train/held-out splits by source (article for literature, patient for CT)."""
from __future__ import annotations

from tasks.common.hashing import stable_fraction

TRAIN, HELDOUT = "train", "heldout"


def split_of(source_id: str, heldout_fraction: float, salt: str) -> str:
    """The same source always lands on the same side, whatever else is in the data."""
    return HELDOUT if stable_fraction(str(source_id), salt) < float(heldout_fraction) else TRAIN


def split_params(section: dict) -> tuple[float, str]:
    split = section["split"]
    return float(split["heldout_fraction"]), str(split["salt"])
