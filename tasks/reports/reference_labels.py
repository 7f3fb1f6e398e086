"""A reference label table (CT-RATE's 18 abnormality labels, 0/1 per volume or study) keyed
like the reports, and the per-label agreement of the stage's derived labels with it.

CT-RATE labels each reconstruction of a scan: rows of one study that agree collapse into
one; where they disagree the first is kept and the later rows are counted as conflicts.
Label rows are not report items: the stage counts them (rows, studies, conflicts, rows it
could not use by reason) in its summary rather than in its rejected table.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pyarrow as pa

from tasks.common.params import ParamsError
from tasks.common.rejection import Rejected
from tasks.reports.input_tables import cell, read_tables, rows, study_key

AGREEMENT_SCHEMA = pa.schema([
    ("label", pa.string()), ("n", pa.int32()), ("reference_positives", pa.int32()),
    ("derived_positives", pa.int32()), ("tp", pa.int32()), ("fp", pa.int32()), ("fn", pa.int32()),
    ("tn", pa.int32()), ("agreement", pa.float64()), ("precision", pa.float64()), ("recall", pa.float64()),
    ("f1", pa.float64()), ("kappa", pa.float64()), ("stage", pa.string()),
])


def reference_schema(labels: Sequence[str]) -> pa.Schema:
    return pa.schema([("study_id", pa.string()), *[(label, pa.int8()) for label in labels],
                      ("source", pa.string()), ("stage", pa.string())])


@dataclass
class ReferenceLabels:
    by_study: dict[str, dict] = field(default_factory=dict)   # study_id -> {label: 0/1}, source
    rows_read: int = 0
    conflicts: int = 0
    unusable: Counter = field(default_factory=Counter)        # reason -> rows

    def counts(self) -> dict:
        return {"reference_label_rows": self.rows_read, "reference_studies": len(self.by_study),
                "reference_label_conflicts": self.conflicts,
                "reference_label_rows_unusable": dict(sorted(self.unusable.items()))}

    def table_rows(self, stage: str) -> list[dict]:
        return [{"study_id": study_id, **entry["labels"], "source": entry["source"], "stage": stage}
                for study_id, entry in sorted(self.by_study.items())]


def label_value(value, label: str) -> int:
    text = cell(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number not in (0.0, 1.0):
        raise Rejected("bad_label_value", f"{label!r} is {text!r}, not 0 or 1")
    return int(number)


def read_reference(cfg: Mapping[str, Any]) -> ReferenceLabels:
    """The reference table of `reference_labels` (a file or a folder; None: no reference),
    one entry per study, keyed with columns.study and study_key_kind like the reports."""
    reference = ReferenceLabels()
    if cfg["reference_labels"] is None:
        return reference
    study_col, labels = cfg["columns"]["study"], list(cfg["labels"])
    tables = read_tables(cfg["reference_labels"], "reference_labels", [study_col, *labels],
                         "split_reports.columns.study and the keys of split_reports.labels", cfg["run_root"])
    for _name, table, row in rows(tables):
        reference.rows_read += 1
        raw = cell(row[study_col]).strip()
        try:
            if not raw:
                raise Rejected("missing_study_id", f"no value in column {study_col!r}")
            study_id = study_key(raw, cfg)
            values = {label: label_value(row[label], label) for label in labels}
        except Rejected as exc:
            reference.unusable[exc.reason] += 1
            continue
        kept = reference.by_study.get(study_id)
        if kept is None:
            reference.by_study[study_id] = {"labels": values, "source": table.source}
        elif kept["labels"] != values:
            reference.conflicts += 1
    return reference


def check_overlap(reference: ReferenceLabels, report_studies: set[str], cfg: Mapping[str, Any]) -> None:
    """Reports and reference labels that share no study mean a key mismatch, not a result."""
    if reference.by_study and report_studies and not report_studies & set(reference.by_study):
        raise ParamsError(f"split_reports.reference_labels: none of its {len(reference.by_study)} studies has a "
                          f"report among {len(report_studies)} (both keyed by column {cfg['columns']['study']!r} "
                          f"as study_key_kind {cfg['study_key_kind']!r}): are they the same studies?")


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def agreement_rows(derived: Mapping[str, Mapping[str, int]], reference: Mapping[str, Mapping[str, int]],
                   labels: Sequence[str], stage: str) -> list[dict]:
    """Per label, over the studies in both: counts, accuracy, precision, recall, F1 and Cohen's
    kappa (None where undefined: no positives on either side, or both sides constant)."""
    studies = sorted(set(derived) & set(reference))
    n = len(studies)
    out = []
    for label in sorted(labels):
        pairs = [(int(reference[s][label]) == 1, int(derived[s][label]) == 1) for s in studies]
        tp = sum(r and d for r, d in pairs)
        fp = sum(d and not r for r, d in pairs)
        fn = sum(r and not d for r, d in pairs)
        tn = n - tp - fp - fn
        # kappa = (po - pe) / (1 - pe), in integers: po = (tp+tn)/n, pe = chance / n^2
        chance = (tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)
        out.append({"label": label, "n": n, "reference_positives": tp + fn, "derived_positives": tp + fp,
                    "tp": tp, "fp": fp, "fn": fn, "tn": tn, "agreement": _ratio(tp + tn, n),
                    "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
                    "f1": _ratio(2 * tp, 2 * tp + fp + fn), "kappa": _ratio(n * (tp + tn) - chance, n * n - chance),
                    "stage": stage})
    return out


def macro(rows_: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Mean over the labels where the figure is defined, rounded for the summary."""
    values = [r[key] for r in rows_ if r[key] is not None]
    return round(sum(values) / len(values), 4) if values else None
