"""The split_reports stage as plain functions for the stage runner (flows/_runner.py).

Items are reports (rows of the reports table): a report enters under its study's keyed
pseudonym, or as `row N` (the table's line) when it has no study key or repeats one.
plan: read the table, key it by pseudonym, one task per `reports_per_task` reports.
split_shard (on a worker, one processor per worker process): clauses with anatomy and
findings, one description per (study, anatomy), the labels per report, as part tables.
merge: sentences.parquet, anatomy_texts.parquet, report_labels.parquet.

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

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.common.hashing import sha256_file
from tasks.common.params import ParamsError
from tasks.common.locations import recorded
from tasks.common.sharding import Merged, Plan, ShardResult, chunks
from tasks.common.tables import concat_parts, write_rows
from tasks.reports.processor import ReportInput, ReportProcessor, load_lexicon

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


def read_reports(cfg: Mapping[str, Any]) -> pd.DataFrame:
    """The reports table as strings; bytes that are not UTF-8 become U+FFFD (and the
    report is rejected as undecodable rather than the whole file failing)."""
    path = Path(cfg["reports"])
    if not path.is_file():
        raise ParamsError(f"split_reports.reports: {path} not found")
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="replace")
    columns = cfg["columns"]
    wanted = [c for c in (columns["study"], columns["text"], columns["findings"], columns["impression"]) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing or not columns["study"] or not (columns["text"] or columns["findings"]):
        raise ParamsError(f"split_reports.columns: {missing or 'study and text/findings'} not in {path} "
                          f"(columns: {list(frame.columns)})")
    return frame


def pseudonymize(raw: str, cfg: Mapping[str, Any]) -> str:
    """The same keyed pseudonym ct_convert gives this study (tasks.ct.deid)."""
    from tasks.ct.deid import pseudonym

    kind = cfg["study_key_kind"]
    if kind == "none":  # the table already holds pseudonyms
        return raw
    return pseudonym(kind, raw, cfg["deid_key"])


def build_inputs(frame: pd.DataFrame, cfg: Mapping[str, Any], source: str) -> tuple[list[dict], list[dict], list[str]]:
    """(report dicts for the shards, rejections for rows without a usable key, the id of every row)."""
    columns = cfg["columns"]
    study_col, text_col = columns["study"], columns["text"]
    f_col, i_col = columns["findings"], columns["impression"]
    reports, rejected, items, first_row = [], [], [], {}
    for index, row in enumerate(frame.to_dict("records")):
        line = f"row {index + 2}"  # the table's line, after its header
        raw = str(row.get(study_col) or "").strip()
        if not raw:
            items.append(line)
            rejected.append(dict(item=line, source=source, reason="missing_study_id",
                                 detail=f"no value in column {study_col!r}", stage=STAGE))
            continue
        study_id = pseudonymize(raw, cfg)
        if study_id in first_row:
            items.append(line)
            rejected.append(dict(item=line, source=source, reason="duplicate_study",
                                 detail=f"a second report for {study_id} (first at {first_row[study_id]}); "
                                        "the first is kept", stage=STAGE))
            continue
        first_row[study_id] = line
        items.append(study_id)
        findings = _text(row.get(text_col)) if text_col else _text(row.get(f_col))
        impression = None if text_col else (_text(row.get(i_col)) if i_col else None)
        reports.append({"study_id": study_id, "findings": findings, "impression": impression})
    return reports, rejected, items


def _text(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


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
        from tasks.linking.linker import get_linker, quickumls_dir

        if not quickumls_dir(index_dir).is_dir():
            raise FileNotFoundError(f"no QuickUMLS index under {index_dir}")
        return get_linker(index_dir, cfg["linker_settings"])
    except Exception as exc:  # noqa: BLE001 - auto mode degrades to the lexicon, loudly
        if required:
            raise
        print(f"[split_reports] linker not used ({exc}); anatomy and findings from the lexicon only")
        return None


def process_shard(reports: list[dict], cfg: Mapping[str, Any], source: str, source_sha256: str) -> dict:
    processor, linker = get_processor(cfg)
    results = processor.process([ReportInput(r["study_id"], r["findings"], r["impression"]) for r in reports])
    sentences, anatomy, labels, rejected = [], [], [], []
    label_names = list(cfg["labels"])
    counts = {"clauses": 0, "sentences": 0}
    for result in results:
        if result.rejection:
            reason, detail = result.rejection
            rejected.append(dict(item=result.study_id, source=source, reason=reason, detail=detail, stage=STAGE))
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


def plan(cfg: dict, out: Path) -> ReportsPlan:
    frame = read_reports(cfg)
    source = recorded(cfg["reports"], cfg["run_root"])
    reports, rejected, items = build_inputs(frame, cfg, source)
    source_sha = sha256_file(cfg["reports"])
    shards = [(index, chunk, source_sha) for index, chunk in enumerate(chunks(reports, cfg["reports_per_task"]))]
    return ReportsPlan(items=items, shards=shards, rejected=rejected)


def _part(out: str | Path, name: str, index: int) -> Path:
    return Path(out) / "_parts" / f"{name}-{index:06d}.parquet"


def split_shard(shard: tuple[int, list[dict], str], cfg: dict, out: str) -> ShardResult:
    """One shard of reports into part tables; value: (linker used, label positives)."""
    index, reports, source_sha = shard
    result = process_shard(reports, cfg, recorded(cfg["reports"], cfg["run_root"]), source_sha)
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
    concat_parts([_part(out, "sentences", i) for i in range(n)], SENTENCES_SCHEMA, out / "sentences.parquet",
                 sort_by=("study_id", "sentence_index", "clause_index"))
    anatomy_rows = concat_parts([_part(out, "anatomy", i) for i in range(n)], ANATOMY_SCHEMA,
                                out / "anatomy_texts.parquet", sort_by=("study_id", "anatomy"))
    reports_out = concat_parts([_part(out, "labels", i) for i in range(n)], labels_schema(cfg["labels"]),
                               out / "report_labels.parquet", sort_by=("study_id",))
    positives: Counter = Counter()
    for result in results:
        positives.update(result.value[1])
    counts = {"linker": "+".join(sorted({r.value[0] for r in results})) or "none", "anatomy_texts": anatomy_rows,
              "label_positives": {name: positives[name] for name in cfg["labels"]}}
    studies = pq.read_table(out / "report_labels.parquet", columns=["study_id"])["study_id"].to_pylist()
    return Merged(items_out=reports_out, accounted=set(studies), rejected=plan.rejected, counts=counts)
