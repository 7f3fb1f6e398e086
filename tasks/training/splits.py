"""Deterministic train / validation / test splits by source (article for literature, patient for CT).

Training reads train and validation (its loss curve); evaluate tunes its choices on
validation and scores test once. The test side is the lowest slice of each source's hash,
so changing validation_fraction moves sources between train and validation only; or, with
`test_source_splits`, the units the dataset itself puts in those splits (CT-RATE's `valid`,
the published test set), the other units split into train and validation by the hash.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from tasks.common.hashing import stable_fraction

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)


@dataclass(frozen=True)
class SplitSpec:
    by: str
    validation_fraction: float
    test_fraction: float | None   # None: test_source_splits decide the test side
    salt: str
    test_source_splits: tuple[str, ...] = ()
    test_units: frozenset[str] = frozenset()  # the units found in test_source_splits

    def of(self, source_id: str) -> str:
        """The same source always lands on the same side, whatever else is in the data."""
        u = stable_fraction(str(source_id), self.salt)
        if self.test_source_splits:
            if source_id in self.test_units:
                return TEST
            return VALIDATION if u < self.validation_fraction else TRAIN
        if u < self.test_fraction:
            return TEST
        return VALIDATION if u < self.test_fraction + self.validation_fraction else TRAIN

    def with_source_splits(self, unit_splits: list[tuple[str, str | None]]) -> "SplitSpec":
        """The spec with its test units: every unit with an item in a test source split (so a
        unit stays on one side). (unit, source split) pairs; a missing split is an error."""
        if not self.test_source_splits:
            return self
        missing = sorted({unit for unit, name in unit_splits if not name})
        if missing:
            raise ValueError(f"split.test_source_splits is {list(self.test_source_splits)}, but {len(missing)} "
                             f"{self.by} (e.g. {missing[0]}) come from no source split: only a dataset that has "
                             f"its own splits (ct_convert.input_kind: ct_rate) can use it")
        return replace(self, test_units=frozenset(u for u, name in unit_splits if name in self.test_source_splits))

    def record(self) -> dict:
        return {"by": self.by, "validation_fraction": self.validation_fraction,
                "test_fraction": self.test_fraction, "salt": self.salt,
                "test_source_splits": list(self.test_source_splits)}


def split_spec(section: dict, unit: str, source_splits: bool = False) -> SplitSpec:
    """The section's split; its `by` must name the unit the stage's records carry, and
    `test_source_splits` needs records that carry their dataset's split (source_splits)."""
    split = section["split"]
    if split["by"] != unit:
        raise ValueError(f"split.by is {split['by']!r}, but this stage splits by {unit!r} only "
                         f"(the unit whose items must stay on one side)")
    named = tuple(split.get("test_source_splits") or ())
    if named and not source_splits:
        raise ValueError(f"split.test_source_splits is {list(named)}, but this stage's {unit} carry no "
                         f"split of their own: set it to []")
    test = split["test_fraction"]
    return SplitSpec(str(split["by"]), float(split["validation_fraction"]), None if test is None else float(test),
                     str(split["salt"]), named)


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
