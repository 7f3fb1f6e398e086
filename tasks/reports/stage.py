"""The split_reports stage as plain functions for the stage runner (flows/_runner.py).

Items are reports (rows of the reports tables, tasks.reports.input_tables): a report enters
under its study's keyed pseudonym, or under its row name (`row N`, `<file> row N` for a
folder of tables) when it has no usable study key or repeats one.
plan: read the tables, key them by pseudonym, read the reference labels (keyed the same
way; not items), one task per `reports_per_task` reports.
split_shard (on a worker, one processor per worker process): clauses with anatomy and
findings, one description per (study, anatomy), the labels per report, as part tables.
merge: sentences.parquet, anatomy_texts.parquet, report_labels.parquet,
reference_labels.parquet and label_agreement.parquet (derived vs reference, per label).

cfg is the split_reports section plus what the flow passes from other sections:
`anatomies` (settled: its own, else the segment stage's), `linker_settings` (the
link_concepts section's linker keys) and `deid_key` (None when study_key_kind is none).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.common.params import ParamsError
from tasks.common.rejection import Rejected
from tasks.common.sharding import Merged, Plan, ShardResult, chunks
from tasks.common.tables import concat_parts, write_rows
from tasks.reports.input_tables import TableFile, cell, read_tables, rows, study_key
from tasks.reports.processor import ReportInput, ReportProcessor, load_lexicon
from tasks.reports.reference_labels import (AGREEMENT_SCHEMA, ReferenceLabels, agreement_rows, check_overlap, macro,
                                            read_reference, reference_schema)

STAGE = "split_reports"

SENTENCES_SCHEMA = pa.schema([
    ("study_id", pa.string()), ("section", pa.string()), ("sentence_index", pa.int32()),
    ("clause_index", pa.int32()), ("start", pa.int32()), ("end", pa.int32()), ("sentence", pa.string()),
    ("text", pa.string()), ("anatomies", pa.list_(pa.string())), ("anatomy_source", pa.string()),
    ("status", pa.string()), ("present", pa.list_(pa.string())), ("uncertain", pa.list_(pa.string())),
    ("absent", pa.list_(pa.string())), ("finding_cuis", pa.list_(pa.string())),
    ("linked_cuis", pa.list_(pa.string())), ("source_sha256", pa.string()), ("stage", pa.string()),
])

ANATOMY_SCHEMA = pa.schema([
    ("study_id", pa.string()), ("anatomy", pa.string()), ("description", pa.string()), ("is_normal", pa.bool_()),
    ("finding_cuis", pa.list_(pa.string())), ("finding_names", pa.list_(pa.string())),
    ("finding_keys", pa.list_(pa.string())), ("defaulted", pa.bool_()), ("source_sha256", pa.string()),
    ("stage", pa.string()),
])


def labels_schema(labels) -> pa.Schema:
    return pa.schema([("study_id", pa.string()), *[(label, pa.int8()) for label in labels],
                      ("n_abnormal", pa.int16()), ("source_sha256", pa.string()), ("stage", pa.string())])


def read_reports(cfg: Mapping[str, Any]) -> list[TableFile]:
    """The reports tables (a file, or a folder of them), checked for the configured columns."""
    columns = cfg["columns"]
    if not columns["study"] or not (columns["text"] or columns["findings"]):
        raise ParamsError(f"split_reports.columns: a study column and a text or findings column are needed "
                          f"(given: {dict(columns)})")
    wanted = [c for c in (columns["study"], columns["text"], columns["findings"], columns["impression"]) if c]
    return read_tables(cfg["reports"], "reports", wanted, "split_reports.columns", cfg["run_root"])


def build_inputs(tables: list[TableFile], cfg: Mapping[str, Any]) -> tuple[list[dict], list[dict], list[str]]:
    """(report dicts for the shards, rejections for rows without a usable key, the id of every row).

    The first report of a study enters under its study key, any other row under its row name.
    A later row of a study with the same text is another reconstruction of the scan (CT-RATE
    repeats the report on each); with another text it is a second report of the study."""
    columns = cfg["columns"]
    study_col, text_col = columns["study"], columns["text"]
    f_col, i_col = columns["findings"], columns["impression"]
    reports, rejected, items, first = [], [], [], {}
    for line, table, row in rows(tables):
        raw = cell(row[study_col]).strip()
        findings = _field(row[text_col] if text_col else row[f_col], cfg)
        impression = None if text_col else (_field(row[i_col], cfg) if i_col else None)
        try:
            if not raw:
                raise Rejected("missing_study_id", f"no value in column {study_col!r}")
            study_id = study_key(raw, cfg)
            if study_id in first:
                kept_line, kept_text = first[study_id]
                if kept_text == (findings.strip(), (impression or "").strip()):
                    raise Rejected("same_study_reconstruction",
                                   f"the same report as {kept_line} of {study_id} (another reconstruction "
                                   f"of the scan); {kept_line} is kept")
                raise Rejected("duplicate_study", f"a second report for {study_id} (first at {kept_line}); "
                                                  "the first is kept")
        except Rejected as exc:
            items.append(line)
            rejected.append(dict(item=line, source=table.source, reason=exc.reason, detail=exc.detail, stage=STAGE))
            continue
        first[study_id] = (line, (findings.strip(), (impression or "").strip()))
        items.append(study_id)
        reports.append({"study_id": study_id, "findings": findings, "impression": impression,
                        "source": table.source, "source_sha256": table.sha256})
    return reports, rejected, items


def _field(value, cfg: Mapping[str, Any]) -> str:
    """A report field as text; one of `empty_markers` (CT-RATE's "Not given.") is empty."""
    text = cell(value)
    return "" if text.strip() in cfg["empty_markers"] else text


_PROCESSORS: dict[str, ReportProcessor] = {}


def get_processor(cfg: Mapping[str, Any]) -> tuple[ReportProcessor, str]:
    """One processor per worker process and config; the linker joins when its index exists
    (linker auto), always (true: an error without it) or never (false)."""
    key = json.dumps(cfg, sort_keys=True, default=str)
    mode = cfg["linker"]
    if mode not in ("auto", True, False):
        raise ValueError(f"split_reports.linker must be auto, true or false, not {mode!r}")
    if key not in _PROCESSORS:
        linker = _open_linker(cfg, required=mode is True) if mode is not False else None
        _PROCESSORS[key] = ReportProcessor(cfg, load_lexicon(cfg["lexicon"]), linker)
    processor = _PROCESSORS[key]
    return processor, ("quickumls" if processor.linker is not None else "none")


def _open_linker(cfg, required: bool):
    index_dir = Path(cfg["linker_index"])
    try:
        from tasks.linking.index_files import quickumls_dir
        from tasks.linking.linker import get_linker

        if not quickumls_dir(index_dir).is_dir():
            raise FileNotFoundError(f"no QuickUMLS index under {index_dir}")
        return get_linker(index_dir, cfg["linker_settings"])
    except Exception as exc:  # noqa: BLE001 - auto mode degrades to the lexicon, loudly
        if required:
            raise
        print(f"[split_reports] linker not used ({exc}); anatomy and findings from the lexicon only")
        return None


def process_shard(reports: list[dict], cfg: Mapping[str, Any]) -> dict:
    processor, linker = get_processor(cfg)
    results = processor.process([ReportInput(r["study_id"], r["findings"], r["impression"]) for r in reports])
    sentences, anatomy, labels, rejected = [], [], [], []
    label_names = list(cfg["labels"])
    counts = {"clauses": 0, "sentences": 0}
    for report, result in zip(reports, results, strict=True):
        source_sha256 = report["source_sha256"]
        if result.rejection:
            reason, detail = result.rejection
            rejected.append(dict(item=result.study_id, source=report["source"], reason=reason, detail=detail,
                                 stage=STAGE))
            continue
        counts["clauses"] += len(result.clauses)
        counts["sentences"] += len({c["sentence_index"] for c in result.clauses})
        for c in result.clauses:
            sentences.append({k: v for k, v in c.items() if not k.startswith("_")} | {
                "finding_cuis": [processor.finding_cuis[k] for k in c["present"] if processor.finding_cuis.get(k)],
                "source_sha256": source_sha256, "stage": STAGE})
        for a in result.anatomy_texts:
            anatomy.append(a | {"source_sha256": source_sha256, "stage": STAGE})
        labels.append({"study_id": result.study_id, **{n: result.labels.get(n, 0) for n in label_names},
                       "n_abnormal": sum(result.labels.values()), "source_sha256": source_sha256, "stage": STAGE})
    return {"sentences": sentences, "anatomy": anatomy, "labels": labels, "rejected": rejected,
            "counts": counts, "linker": linker}


@dataclass
class ReportsPlan(Plan):
    rejected: list[dict] = field(default_factory=list)   # rows without a usable study key
    reference: ReferenceLabels = field(default_factory=ReferenceLabels)


def plan(cfg: dict, out: Path) -> ReportsPlan:
    reports, rejected, items = build_inputs(read_reports(cfg), cfg)
    reference = read_reference(cfg)
    check_overlap(reference, {r["study_id"] for r in reports}, cfg)
    shards = list(enumerate(chunks(reports, cfg["reports_per_task"])))
    return ReportsPlan(items=items, shards=shards, rejected=rejected, reference=reference,
                       counts=reference.counts())


def _part(out: str | Path, name: str, index: int) -> Path:
    return Path(out) / "_parts" / f"{name}-{index:06d}.parquet"


def split_shard(shard: tuple[int, list[dict]], cfg: dict, out: str) -> ShardResult:
    """One shard of reports into part tables; value: (linker used, label positives)."""
    index, reports = shard
    result = process_shard(reports, cfg)
    write_rows(result["sentences"], SENTENCES_SCHEMA, _part(out, "sentences", index))
    write_rows(result["anatomy"], ANATOMY_SCHEMA, _part(out, "anatomy", index))
    write_rows(result["labels"], labels_schema(cfg["labels"]), _part(out, "labels", index))
    anatomy = result["anatomy"]
    counts = {**result["counts"], "anatomy_defaulted": sum(r["defaulted"] for r in anatomy),
              "anatomy_abnormal": sum(not r["is_normal"] for r in anatomy)}
    positives = {name: sum(r[name] for r in result["labels"]) for name in cfg["labels"]}
    return ShardResult(value=(result["linker"], positives), rejected=result["rejected"], counts=counts)


def merge(cfg: dict, out: Path, plan: ReportsPlan, results: list[ShardResult], fan_out) -> Merged:
    n = len(plan.shards)
    labels = list(cfg["labels"])
    concat_parts([_part(out, "sentences", i) for i in range(n)], SENTENCES_SCHEMA, out / "sentences.parquet",
                 sort_by=("study_id", "sentence_index", "clause_index"))
    anatomy_rows = concat_parts([_part(out, "anatomy", i) for i in range(n)], ANATOMY_SCHEMA,
                                out / "anatomy_texts.parquet", sort_by=("study_id", "anatomy"))
    reports_out = concat_parts([_part(out, "labels", i) for i in range(n)], labels_schema(labels),
                               out / "report_labels.parquet", sort_by=("study_id",))
    positives: Counter = Counter()
    for result in results:
        positives.update(result.value[1])
    derived = {row["study_id"]: row for row in
               pq.read_table(out / "report_labels.parquet", columns=["study_id", *labels]).to_pylist()}
    reference = plan.reference
    write_rows(reference.table_rows(STAGE), reference_schema(labels), out / "reference_labels.parquet",
               sort_by=("study_id",))
    agreement = agreement_rows(derived, {k: v["labels"] for k, v in reference.by_study.items()}, labels, STAGE)
    write_rows(agreement, AGREEMENT_SCHEMA, out / "label_agreement.parquet", sort_by=("label",))
    counts = {"linker": "+".join(sorted({r.value[0] for r in results})) or "none", "anatomy_texts": anatomy_rows,
              "label_positives": {name: positives[name] for name in labels},
              "label_agreement_studies": agreement[0]["n"] if agreement else 0,
              "label_agreement_macro_f1": macro(agreement, "f1"),
              "label_agreement_macro_kappa": macro(agreement, "kappa")}
    return Merged(items_out=reports_out, accounted=set(derived), rejected=plan.rejected, counts=counts)
