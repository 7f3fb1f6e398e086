"""Deterministic train / validation / test splits by source (article for literature, patient for CT).

Training reads train and validation (its loss curve); evaluate tunes its choices on
validation and scores test once. The test side is the lowest slice of each source's hash,
so changing validation_fraction moves sources between train and validation only.
"""
from __future__ import annotations

from dataclasses import dataclass

from tasks.common.hashing import stable_fraction

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)


@dataclass(frozen=True)
class SplitSpec:
    by: str
    validation_fraction: float
    test_fraction: float
    salt: str

    def of(self, source_id: str) -> str:
        """The same source always lands on the same side, whatever else is in the data."""
        u = stable_fraction(str(source_id), self.salt)
        if u < self.test_fraction:
            return TEST
        return VALIDATION if u < self.test_fraction + self.validation_fraction else TRAIN

    def record(self) -> dict:
        return {"by": self.by, "validation_fraction": self.validation_fraction,
                "test_fraction": self.test_fraction, "salt": self.salt}


def split_spec(section: dict, unit: str) -> SplitSpec:
    """The section's split; its `by` must name the unit the stage's records carry."""
    split = section["split"]
    if split["by"] != unit:
        raise ValueError(f"split.by is {split['by']!r}, but this stage splits by {unit!r} only "
                         f"(the unit whose items must stay on one side)")
    return SplitSpec(str(split["by"]), float(split["validation_fraction"]), float(split["test_fraction"]),
                     str(split["salt"]))


def by_split(records: list) -> dict[str, list]:
    """{train, validation, test: the records of that side}, each in the input order."""
    out: dict[str, list] = {name: [] for name in SPLITS}
    for r in records:
        out[r.split].append(r)
    return out


def split_counts(records: list, unit: str) -> dict[str, dict[str, int]]:
    """{side: {"items", "units"}}: how many records and split units (getattr(record, unit)) each side holds."""
    return {name: {"items": len(rs), "units": len({getattr(r, unit) for r in rs})}
            for name, rs in by_split(records).items()}
