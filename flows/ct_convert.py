"""`ct_convert` stage: CT studies (DICOM series in any layout, NIfTI) -> de-identified
canonical int16 HU volumes.

Outputs in ct_convert.output_dir: volumes/<series_id>.nii.gz, studies.parquet (columns
documented in tasks.ct.convert), rejected.parquet, summary.json, timing.json.
Two fan-outs: header scan over file shards, then conversion over series shards.
"""
from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path

from prefect import flow, task

from flows._stage import gather, plan_shards, run_stage_cli
from tasks.common.summary import StageSummary
from tasks.common.tables import write_rejected, write_rows
from tasks.ct.convert import (STUDIES_SCHEMA, Rejection, convert_dicom_series, convert_nifti, discover,
                              file_problem_rejection, is_url, stage_source)
from tasks.ct.deid import deid_key
from tasks.ct.dicom_series import group_series, scan_files


@task(name="ct-scan-headers")
def scan_shard(paths: list[str], missing_uid: str, root: str):
    return scan_files(paths, missing_uid=missing_uid, root=root)


@task(name="ct-convert-shard")
def convert_shard(items: list, cfg: dict, key: str, out_dir: str, root: str) -> list:
    results = []
    for kind, item in items:
        if kind == "dicom":
            results.append(convert_dicom_series(item, cfg, key, out_dir, root))
        else:
            results.append(convert_nifti(item, cfg, key, out_dir, root))
    return results


@flow(name="ct_convert")
def ct_convert_flow(params: dict) -> dict:
    cfg = dict(params["ct_convert"])
    key = deid_key(params)
    cfg.setdefault("source_paths", (params.get("deid") or {}).get("source_paths", "hashed"))
    out_dir = Path(cfg["output_dir"])
    staging = tempfile.mkdtemp(prefix="ct_convert_src_") if is_url(str(cfg["source"])) else None
    try:
        return _run(cfg, key, out_dir, stage_source(str(cfg["source"]), staging) if staging else str(cfg["source"]))
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


def _run(cfg: dict, key: str, out_dir: Path, root: str) -> dict:
    summary = StageSummary("ct_convert", unit="series")
    if (out_dir / "volumes").exists():
        shutil.rmtree(out_dir / "volumes")  # outputs are rewritten completely
    out_dir.mkdir(parents=True, exist_ok=True)

    dicom_files, nifti_files = discover(root)
    scans = gather([scan_shard.submit(shard, cfg.get("missing_uid", "folder"), root)
                    for shard in plan_shards(dicom_files, int(cfg.get("files_per_task", 2000)))])
    headers, problems = [], []
    for found, bad in scans:
        headers.extend(found)
        problems.extend(bad)
    series = group_series(headers)
    items = [("dicom", s) for s in series] + [("nifti", p) for p in nifti_files]
    results = gather([convert_shard.submit(shard, cfg, key, str(out_dir), root)
                      for shard in plan_shards(items, int(cfg.get("series_per_task", 8)))], summary)
    rows, rejected = [], []
    for shard_result in results:
        for result in shard_result:
            (rejected if isinstance(result, Rejection) else rows).append(result)
    mode = cfg["source_paths"]
    rejected += [file_problem_rejection(p, key, root, mode) for p in problems]

    write_rows(rows, STUDIES_SCHEMA, out_dir / "studies.parquet", sort_by=("patient_id", "study_id", "series_id"))
    write_rejected(rejected, out_dir / "rejected.parquet")
    summary.items_in = len(items) + len(problems)
    summary.items_out = len(rows)
    summary.add_rejections(r.reason for r in rejected)
    summary.extra["files"] = len(dicom_files) + len(nifti_files)
    summary.extra["patients"] = len({r["patient_id"] for r in rows})
    summary.extra["studies"] = len({r["study_id"] for r in rows})
    summary.extra["by_format"] = dict(sorted(Counter(r["source_format"] for r in rows).items()))
    summary.write(out_dir)
    print(summary.report())
    return summary.as_dict()


if __name__ == "__main__":
    run_stage_cli(ct_convert_flow)
