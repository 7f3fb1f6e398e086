"""`segment` stage: one label map per converted CT series, anatomy measurements, QA overlays.

Reads ct_convert's studies.parquet and volumes; writes to segment.output_dir:
  labels/<series_id>.nii.gz   uint8 TotalSegmentator v2 `total` class ids, same grid as the volume
  anatomy.parquet             per (series, anatomy): voxels, ml, bbox, FOV contact (tasks.ct.anatomy)
  overlays/<series_id>.png    axial, coronal, sagittal slices with anatomy colours
  rejected.parquet, summary.json, timing.json
Backend `provided` (masks shipped with the data) or `totalsegmentator` (the real model).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from prefect import flow, task

from flows._stage import gather, plan_shards, run_stage_cli
from tasks.common.summary import StageSummary
from tasks.common.tables import Rejection, write_rejected, write_rows
from tasks.ct.anatomy import ANATOMY_SCHEMA, STAGE, build_groups, measure
from tasks.ct.deid import deid_key
from tasks.ct.nifti_io import read_nifti, spacing, write_nifti

BACKENDS = ("provided", "totalsegmentator")


def segment_series(row: dict, cfg: dict, groups, in_dir: str, out_dir: str, mask_index: dict | None) -> dict:
    """Label map, anatomy rows and overlay of one series; {"rows": [...]} or {"rejected": Rejection}."""
    from tasks.common.rejection import Rejected
    from tasks.ct.provided_backend import load_mask

    series_id = row["series_id"]
    img = read_nifti(Path(in_dir) / row["volume"])
    volume = np.asanyarray(img.dataobj)
    backend = cfg["backend"]
    tol = float(cfg.get("geometry_tolerance_mm", 1e-3))
    try:
        if backend == "provided":
            path = (mask_index or {}).get(series_id)
            if path is None:
                return {"rejected": Rejection(series_id, row.get("source") or "", "no_mask",
                                              "no provided mask for this series", STAGE)}
            labels = load_mask(path, volume.shape, img.affine, set(groups.names), tol)
        else:
            from tasks.ct.totalseg_backend import resolve_roi_subset, segment_image

            ts_cfg = dict(cfg.get("totalsegmentator") or {})
            roi = resolve_roi_subset(ts_cfg.get("roi_subset", "auto"), groups.class_names())
            labels = segment_image(img, ts_cfg, roi)
    except Rejected as exc:
        return {"rejected": Rejection(series_id, row.get("source") or "", exc.reason, exc.detail, STAGE)}
    write_nifti(labels, img.affine, Path(out_dir) / "labels" / f"{series_id}.nii.gz")
    rows = measure(labels, img.affine, groups)
    for r in rows:
        r.update(series_id=series_id, study_id=row["study_id"], patient_id=row["patient_id"], backend=backend)
    if cfg.get("overlays", True):
        from tasks.ct.overlays import render_overlay

        render_overlay(volume, labels, spacing(img.affine), groups.ids,
                       Path(out_dir) / "overlays" / f"{series_id}.png")
    return {"rows": rows}


@task(name="segment-shard")
def segment_shard(rows: list[dict], cfg: dict, groups, in_dir: str, out_dir: str, mask_index) -> list[dict]:
    if cfg["backend"] == "totalsegmentator":
        from tasks.ct.totalseg_backend import configure_home

        configure_home((cfg.get("totalsegmentator") or {}).get("home_dir"))  # in the worker process too
    return [segment_series(row, cfg, groups, in_dir, out_dir, mask_index) for row in rows]


@flow(name="segment")
def segment_flow(params: dict) -> dict:
    cfg = dict(params["segment"])
    if cfg.get("backend") not in BACKENDS:
        raise ValueError(f"segment.backend must be one of {BACKENDS}, got {cfg.get('backend')!r}")
    ts_cfg = dict(cfg.get("totalsegmentator") or {})
    groups = build_groups(cfg["anatomies"], task=ts_cfg.get("task", "total"))  # start-up validation
    in_dir, out_dir = Path(cfg["input_dir"]), Path(cfg["output_dir"])
    summary = StageSummary("segment", unit="series")
    for sub in ("labels", "overlays"):
        if (out_dir / sub).exists():
            shutil.rmtree(out_dir / sub)  # outputs are rewritten completely
    out_dir.mkdir(parents=True, exist_ok=True)
    mask_index = None
    if cfg["backend"] == "provided":
        from tasks.ct.provided_backend import index_masks

        mask_index = index_masks(cfg["provided"]["masks_dir"], deid_key(params))
    else:
        from tasks.ct.totalseg_backend import check_weights, configure_home, resolve_roi_subset

        configure_home(ts_cfg.get("home_dir"))
        check_weights(ts_cfg.get("task", "total"), bool(ts_cfg.get("fast", True)),
                      resolve_roi_subset(ts_cfg.get("roi_subset", "auto"), groups.class_names()))
    studies = pq.read_table(in_dir / "studies.parquet").to_pylist()
    shards = plan_shards(studies, int(cfg.get("series_per_task", 8)))
    results = gather([segment_shard.submit(s, cfg, groups, str(in_dir), str(out_dir), mask_index)
                      for s in shards], summary)
    rows, rejected = [], []
    for shard in results:
        for result in shard:
            if "rejected" in result:
                rejected.append(result["rejected"])
            else:
                rows.extend(result["rows"])
    write_rows(rows, ANATOMY_SCHEMA, out_dir / "anatomy.parquet", sort_by=("series_id", "anatomy"))
    write_rejected(rejected, out_dir / "rejected.parquet")
    summary.items_in = len(studies)
    summary.items_out = len(studies) - len(rejected)
    summary.add_rejections(r.reason for r in rejected)
    summary.extra["backend"] = cfg["backend"]
    summary.extra["anatomy_rows"] = len(rows)
    summary.extra["anatomies_from_other_tasks"] = sorted(groups.other_task)  # not in this label map
    summary.write(out_dir)
    print(summary.report())
    return summary.as_dict()


if __name__ == "__main__":
    run_stage_cli(segment_flow)
