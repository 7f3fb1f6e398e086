"""fVLM on CT-RATE's abnormality labels: each label scored through the anatomy it belongs to.

`evaluate.ct_rate_label_anatomies` maps an anatomy of the model to the labels it answers
for (the released fVLM code's evaluation: eleven lung labels, three of the heart, hiatal
hernia on the oesophagus, arterial wall calcification on the aorta). A label's score for
a study is the model's zero-shot probability of "{label} in the {anatomy}." against the
anatomy's normal statement (`evaluate.fvlm_tuning`, the pair chosen on validation), on the test studies where that
anatomy is usable; its truth comes from a labels table with one int column per label
(split_reports writes both: CT-RATE's own table, reference_labels.parquet, and the labels
it derives from the reports, report_labels.parquet). Intervals: bootstrap over patients.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.evaluate.metrics import column_aucs_with_ci, macro_auc_with_ci, n_groups

MAPPING_KEY = "evaluate.ct_rate_label_anatomies"
# label_source -> the evaluate key naming its table
TABLE_KEYS = {"reference": "reference_labels", "derived": "report_labels"}
NOT_LABEL_COLUMNS = frozenset({"study_id", "n_abnormal", "source_sha256", "stage", "source"})


@dataclass(frozen=True)
class LabelPrompt:
    label: str
    anatomy: str
    positive: str
    negative: str


@dataclass
class LabelTable:
    path: Path
    source: str                    # reference | derived
    labels: list[str]              # the table's label columns, in its order
    rows: dict[str, dict]          # table key (st-…, ac-…) -> {label: 0/1}


def table_path(params: dict) -> tuple[str, Path]:
    """(evaluate key, path) of the labels table that `evaluate.label_source` names."""
    source = params["label_source"]
    if source not in TABLE_KEYS:
        raise ValueError(f"evaluate.label_source: expected one of {sorted(TABLE_KEYS)}, got {source!r}")
    key = TABLE_KEYS[source]
    return f"evaluate.{key}", Path(params[key])


def _union(previous: dict | None, values: dict) -> dict:
    """Two label rows of one study (several reconstructions, a study and its accession):
    a label present in either is present."""
    if previous is None:
        return values
    return {label: max(previous.get(label, 0), values.get(label, 0)) for label in {**previous, **values}}


def read_label_table(params: dict) -> LabelTable:
    key, path = table_path(params)
    if not path.is_file():
        other = "derived" if params["label_source"] == "reference" else "reference"
        raise FileNotFoundError(f"{key}: {path} not found (evaluate.label_source={params['label_source']}; "
                                f"split_reports writes it); or set evaluate.label_source={other}")
    table = pq.read_table(path)
    if "study_id" not in table.column_names:
        raise ValueError(f"{key}: {path} has no study_id column (columns: {table.column_names})")
    # label columns: the 0/1 ints (split_reports writes int8), not the bookkeeping ones
    labels = [f.name for f in table.schema if f.name not in NOT_LABEL_COLUMNS
              and (pa.types.is_integer(f.type) or pa.types.is_boolean(f.type))]
    rows: dict[str, dict] = {}
    for row in table.select(["study_id", *labels]).to_pylist():
        values = {label: int(bool(row[label])) for label in labels if row[label] is not None}
        rows[row["study_id"]] = _union(rows.get(row["study_id"]), values)
    return LabelTable(path, params["label_source"], labels, rows)


def check_label_anatomies(mapping: dict[str, list[str]], model_anatomies: list[str], table: LabelTable) -> None:
    """Every mapped anatomy is one the model aligns, every mapped label a column of the
    labels table, and no label belongs to two anatomies; else an error naming the key."""
    owner: dict[str, str] = {}
    for anatomy, labels in mapping.items():
        if anatomy not in model_anatomies:
            close = difflib.get_close_matches(anatomy, model_anatomies, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{MAPPING_KEY}.{anatomy}: unknown anatomy {anatomy!r}{hint}; the fVLM model "
                             f"aligns {list(model_anatomies)}")
        for label in labels:
            if label not in table.labels:
                close = difflib.get_close_matches(label, table.labels, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{MAPPING_KEY}.{anatomy}: unknown label {label!r}{hint}; the labels table "
                                 f"{table.path} has {table.labels}")
            if label in owner and owner[label] != anatomy:
                raise ValueError(f"{MAPPING_KEY}: label {label!r} is mapped to both {owner[label]!r} and "
                                 f"{anatomy!r}; a label is scored through one anatomy")
            owner[label] = anatomy


def label_prompts(mapping: dict[str, list[str]], prompts: dict) -> list[LabelPrompt]:
    """One prompt pair per mapped label, in the mapping's order."""
    def fill(template: str, label: str, anatomy: str) -> str:
        return template.format(finding=label.lower(), anatomy=anatomy.replace("_", " "))

    return [LabelPrompt(label, anatomy, fill(prompts["positive"], label, anatomy), fill(prompts["negative"], label, anatomy))
            for anatomy, labels in mapping.items() for label in dict.fromkeys(labels)]


def truth_matrix(study_ids: list[str], table: LabelTable, key_map: dict[str, str],
                 labels: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """([N, L] 0/1 per test study and label, -1 where the study has no row; [N] whether
    the study has a row; the number of table rows that name a known study). Table keys
    reach a study through key_map (tasks.training.fvlm_data.study_key_map: st-… study
    ids, ac-… accessions)."""
    by_study: dict[str, dict] = {}
    matched = 0
    for key in sorted(table.rows):
        study = key_map.get(key)
        if study is None:
            continue
        matched += 1
        by_study[study] = _union(by_study.get(study), table.rows[key])
    truth = np.full((len(study_ids), len(labels)), -1, dtype=int)
    has_row = np.zeros(len(study_ids), dtype=bool)
    for i, study in enumerate(study_ids):
        row = by_study.get(study)
        if row is not None:
            truth[i] = [row.get(label, -1) for label in labels]
            has_row[i] = True
    return truth, has_row, matched


def no_match_message(table: LabelTable, study_rows: list[dict]) -> str:
    """Why no row of the labels table names a converted study: the key kinds on each side."""
    from tasks.training.fvlm_data import key_kind

    def kinds(keys) -> str:
        counts: dict[str, int] = {}
        for key in keys:
            counts[key_kind(key)] = counts.get(key_kind(key), 0) + 1
        return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "none"

    return (f"no row of the labels table {table.path} names a converted study: its study_id keys are "
            f"{kinds(table.rows)}; studies.parquet has study_id {kinds(r['study_id'] for r in study_rows)} "
            f"and accession_id {kinds(r['accession_id'] for r in study_rows if r.get('accession_id'))}: "
            f"split_reports must key the labels as the volumes are keyed (split_reports.study_key_kind)")


def score_labels(prompts: list[LabelPrompt], scores: np.ndarray, usable: np.ndarray, truth: np.ndarray,
                 groups: list[str], table_labels: list[str], min_positives: int, n_boot: int, seed: int) -> dict:
    """Per-label AUC with a patient-bootstrap interval, the labels that could not be scored
    with the reason, and the macro AUC over the scored ones.

    scores, usable, truth: [N, L] in the order of `prompts` (usable: the label's anatomy is
    usable in that study; truth -1: no label row); groups: each study's patient.
    """
    valid = usable.astype(bool) & (truth >= 0)
    labels = np.where(valid, truth, 0)
    scored, not_scored = [], {}
    for j, p in enumerate(prompts):
        n, positives = int(valid[:, j].sum()), int(labels[valid[:, j], j].sum())
        where = f"test studies with a usable {p.anatomy} and a label row"
        if n == 0:
            not_scored[p.label] = {"anatomy": p.anatomy, "reason": "no_studies", "detail": f"no {where}"}
        elif positives < min_positives:
            not_scored[p.label] = {"anatomy": p.anatomy, "reason": "too_few_positives",
                                   "detail": f"{positives} positive(s) among {n} {where}; "
                                             f"evaluate.min_positives is {min_positives}"}
        elif positives == n:
            not_scored[p.label] = {"anatomy": p.anatomy, "reason": "no_negatives",
                                   "detail": f"all {n} {where} are positive"}
        else:
            scored.append(j)
    mapped = {p.label for p in prompts}
    for label in table_labels:
        if label not in mapped:
            not_scored[label] = {"anatomy": None, "reason": "not_mapped",
                                 "detail": f"no anatomy in {MAPPING_KEY} lists it"}
    per_label = {}
    if scored:
        cols = np.array(scored)
        intervals = column_aucs_with_ci(labels[:, cols], scores[:, cols], groups, n_boot, seed, valid[:, cols])
        for j, interval in zip(scored, intervals):
            rows = valid[:, j]
            per_label[prompts[j].label] = {
                "anatomy": prompts[j].anatomy, "auc": interval["auc"], "ci": interval["ci95"],
                "positives": int(labels[rows, j].sum()), "n": int(rows.sum()),
                "patients": n_groups([g for g, ok in zip(groups, rows) if ok])}
        macro = macro_auc_with_ci(labels[:, cols], scores[:, cols], groups, n_boot, seed, valid[:, cols])
    else:
        macro = None
    return {"ct_rate_labels": per_label,
            "ct_rate_labels_not_scored": {k: not_scored[k] for k in sorted(not_scored)},
            "ct_rate_macro_auc": macro}
