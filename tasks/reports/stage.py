"""The split_reports stage's plain functions: read the reports table, key it by
pseudonym, run the processor on a shard, turn results into rows."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa

from tasks.common.hashing import sha256_file
from tasks.common.params import ParamsError
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


def resolve_config(params: Mapping[str, Any]) -> dict:
    """The section with its anatomy list settled: its own, else the segment stage's."""
    cfg = dict(params[STAGE])
    anatomies = cfg.get("anatomies")
    if not anatomies:
        anatomies = list(((params.get("segment") or {}).get("anatomies") or {}).keys())
    if not anatomies:
        anatomies = list(load_lexicon(cfg["lexicon"])["anatomy_terms"])
    cfg["anatomies"] = list(anatomies)
    return cfg


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
    columns = dict(cfg.get("columns") or {})
    wanted = [c for c in (columns.get("study"), columns.get("text"), columns.get("findings"),
                          columns.get("impression")) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing or not columns.get("study") or not (columns.get("text") or columns.get("findings")):
        raise ParamsError(f"split_reports.columns: {missing or 'study and text/findings'} not in {path} "
                          f"(columns: {list(frame.columns)})")
    return frame


def pseudonymize(raw: str, cfg: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """The same keyed pseudonym ct_convert gives this study (tasks.ct.deid)."""
    from tasks.ct.deid import deid_key, pseudonym

    kind = cfg.get("study_key_kind") or "study"
    if kind == "none":  # the table already holds pseudonyms
        return raw
    return pseudonym(kind, raw, deid_key(params))


def build_inputs(frame: pd.DataFrame, cfg: Mapping[str, Any], params: Mapping[str, Any],
                 source: str) -> tuple[list[dict], list[dict]]:
    """(report dicts for the shards, rejections for rows without a usable key)."""
    columns = dict(cfg.get("columns") or {})
    study_col, text_col = columns["study"], columns.get("text")
    f_col, i_col = columns.get("findings"), columns.get("impression")
    reports, rejected, seen = [], [], set()
    for index, row in enumerate(frame.to_dict("records")):
        raw = str(row.get(study_col) or "").strip()
        if not raw:
            rejected.append(dict(item=f"row {index + 2}", source=source, reason="missing_study_id",
                                 detail=f"no value in column {study_col!r}", stage=STAGE))
            continue
        study_id = pseudonymize(raw, cfg, params)
        if study_id in seen:
            rejected.append(dict(item=study_id, source=source, reason="duplicate_study",
                                 detail="a second report for this study; the first is kept", stage=STAGE))
            continue
        seen.add(study_id)
        findings = _text(row.get(text_col)) if text_col else _text(row.get(f_col))
        impression = None if text_col else (_text(row.get(i_col)) if i_col else None)
        reports.append({"study_id": study_id, "findings": findings, "impression": impression})
    return reports, rejected


def _text(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


_PROCESSORS: dict[str, ReportProcessor] = {}


def get_processor(cfg: Mapping[str, Any], link_params: Mapping[str, Any] | None) -> tuple[ReportProcessor, str]:
    """One processor per worker process and config; the linker joins when its index exists."""
    key = json.dumps([cfg, link_params], sort_keys=True, default=str)
    linker_mode = str(cfg.get("linker", "auto")).lower()
    if key not in _PROCESSORS:
        linker = None
        if linker_mode in ("auto", "true", "on", "yes"):
            linker = _open_linker(cfg, link_params, required=linker_mode != "auto")
        _PROCESSORS[key] = ReportProcessor(cfg, load_lexicon(cfg["lexicon"]), linker)
    processor = _PROCESSORS[key]
    return processor, ("quickumls" if processor.linker is not None else "none")


def _open_linker(cfg, link_params, required: bool):
    index_dir = Path(cfg.get("linker_index") or "data/umls_index")
    try:
        from tasks.linking.linker import get_linker, quickumls_dir

        if not quickumls_dir(index_dir).is_dir():
            raise FileNotFoundError(f"no QuickUMLS index under {index_dir}")
        return get_linker(index_dir, dict(link_params or {}))
    except Exception as exc:  # noqa: BLE001 - auto mode degrades to the lexicon, loudly
        if required:
            raise
        print(f"[split_reports] linker not used ({exc}); anatomy and findings from the lexicon only")
        return None


def process_shard(reports: list[dict], cfg: Mapping[str, Any], link_params, source: str,
                  source_sha256: str) -> dict:
    processor, linker = get_processor(cfg, link_params)
    results = processor.process([ReportInput(r["study_id"], r["findings"], r["impression"]) for r in reports])
    sentences, anatomy, labels, rejected = [], [], [], []
    label_names = list(cfg["labels"])
    counts = {"reports": len(reports), "clauses": 0, "sentences": 0}
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


def source_hash(path: str | Path) -> str:
    return sha256_file(path)
