"""The ct_convert stage as plain functions for the stage runner (flows/_runner.py).

plan (a parallel pass of its own), by `input_kind`:
- files: list the input files, read the DICOM headers (one task per `files_per_task`
  files) and group their frames into series. The items that enter are every DICOM
  series, every NIfTI file and every file whose header cannot be used.
- ct_rate: every .nii.gz under the source, with its CT-RATE metadata row and the
  reconstruction choice (tasks.ct.ct_rate.plan_volumes); files rejected while planning
  (name, metadata, reconstruction not kept) are rejected rows already.
One task per `series_per_task` series or volumes.
convert_shard (on a worker): each series, NIfTI file or CT-RATE volume to
volumes/<series_id>.nii.gz and its studies row (tasks.ct.convert, tasks.ct.ct_rate).
merge: studies.parquet from the part tables; conversion.json (tasks.ct.conversion_settings);
patients, studies, formats, HU sources and geometry sources counted.

cfg is the ct_convert section plus, from the flow: `source_paths` and `deid_key` (the
deid section) and `root`, the local folder holding the input.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from tasks.common.sharding import Merged, Plan, ShardResult, chunks
from tasks.common.tables import Rejection, concat_parts, write_rows
from tasks.ct.conversion_settings import write_conversion_settings
from tasks.ct.convert import (STAGE, STUDIES_SCHEMA, convert_dicom_series, convert_nifti, discover,
                              file_problem_rejection, nifti_ids, relative)
from tasks.ct.ct_rate import convert_ct_rate_volume, plan_volumes
from tasks.ct.deid import pseudonym, pseudonyms, source_label
from tasks.ct.dicom_series import FileHeader, FileProblem, group_series, scan_files

STUDIES_SORT = ("patient_id", "study_id", "series_id")
CONVERTERS = {"dicom": convert_dicom_series, "nifti": convert_nifti, "ct_rate": convert_ct_rate_volume}


@dataclass
class ConvertPlan(Plan):
    rejected: list[dict] = field(default_factory=list)   # found while planning: unusable files


def scan_chunk(paths: list[str], cfg: dict) -> tuple[list[FileHeader], list[FileProblem]]:
    return scan_files(paths, missing_uid=cfg["missing_uid"], root=cfg["root"])


def plan(cfg: dict, out: Path, fan_out) -> ConvertPlan:
    """Items: the series id of each DICOM series and NIfTI file, `file:<source>` of each
    file that is rejected before conversion (unreadable header, series id taken twice)."""
    if cfg["input_kind"] == "ct_rate":
        return plan_ct_rate(cfg)
    if cfg["input_kind"] != "files":
        raise ValueError(f"ct_convert.input_kind: unknown kind {cfg['input_kind']!r} (files | ct_rate)")
    root, key, mode = cfg["root"], cfg["deid_key"], cfg["source_paths"]
    dicom_files, nifti_files = discover(root)
    headers, problems = [], []
    for found, bad in fan_out(scan_chunk, chunks(dicom_files, cfg["files_per_task"]), cfg,
                              name=f"{STAGE}-scan-headers"):
        headers.extend(found)
        problems.extend(bad)
    rejected = [file_problem_rejection(p, key, root, mode).as_row() for p in problems]
    inputs, taken = [], {}
    for series in group_series(headers):  # series ids are unique among DICOM series
        series_id = pseudonyms(series.first.ids, key)["series_id"]
        taken[series_id] = "a DICOM series"
        inputs.append((series_id, ("dicom", series)))
    for path in nifti_files:
        series_id = pseudonym("series", nifti_ids(path, root)["SeriesInstanceUID"], key)
        src = source_label(relative(path, root), key, mode)
        if series_id in taken:  # two inputs would write one volume
            rejected.append(Rejection(f"file:{src}", src, "duplicate_series",
                                      f"series id {series_id} already taken by {taken[series_id]}", STAGE).as_row())
            continue
        taken[series_id] = f"NIfTI file {src}"
        inputs.append((series_id, ("nifti", path)))
    shards = list(enumerate(chunks([work for _, work in inputs], cfg["series_per_task"])))
    return ConvertPlan(items=[series_id for series_id, _ in inputs] + [r["item"] for r in rejected],
                       shards=shards, counts={"files": len(dicom_files) + len(nifti_files)}, rejected=rejected)


def plan_ct_rate(cfg: dict) -> ConvertPlan:
    """Items: the series id of each CT-RATE volume, `file:<source>` for a file whose name is
    not CT-RATE's or repeats a series."""
    inputs, rejected, counts = plan_volumes(cfg)
    shards = list(enumerate(chunks([("ct_rate", volume) for _, volume in inputs], cfg["series_per_task"])))
    return ConvertPlan(items=[series_id for series_id, _ in inputs] + [r["item"] for r in rejected],
                       shards=shards, counts=counts, rejected=rejected)


def convert_shard(shard: tuple[int, list[tuple[str, object]]], cfg: dict, out: str) -> ShardResult:
    """Convert one shard of series and NIfTI files; value: the part table's path."""
    index, inputs = shard
    rows, rejected = [], []
    for kind, value in inputs:
        result = CONVERTERS[kind](value, cfg, cfg["deid_key"], out, cfg["root"])
        if isinstance(result, Rejection):
            rejected.append(result.as_row())
        else:
            rows.append(result)
    part = Path(out) / "_parts" / f"studies-{index:06d}.parquet"
    write_rows(rows, STUDIES_SCHEMA, part)
    return ShardResult(value=str(part), rejected=rejected)


def merge(cfg: dict, out: Path, plan: ConvertPlan, results: list[ShardResult], fan_out) -> Merged:
    write_conversion_settings(cfg, out)
    studies = out / "studies.parquet"
    items_out = concat_parts([r.value for r in results], STUDIES_SCHEMA, studies, sort_by=STUDIES_SORT)
    table = pq.read_table(studies, columns=["patient_id", "study_id", "series_id", "source_format", "hu_source",
                                            "geometry_source"])
    counts = {"patients": len(set(table["patient_id"].to_pylist())),
              "studies": len(set(table["study_id"].to_pylist())),
              **{name: dict(sorted(Counter(table[column].to_pylist()).items()))
                 for name, column in (("by_format", "source_format"), ("by_hu_source", "hu_source"),
                                      ("by_geometry_source", "geometry_source"))}}
    return Merged(items_out=items_out, accounted=set(table["series_id"].to_pylist()), rejected=plan.rejected,
                  counts=counts)
