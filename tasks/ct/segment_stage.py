"""The segment stage as plain functions for the stage runner (flows/_runner.py).

plan: the converted series (ct_convert's studies.parquet), with start-up checks: the
anatomy groups against TotalSegmentator's class maps, and the provided masks indexed by
series pseudonym or TotalSegmentator's weights present; one task per `series_per_task`.
segment_shard (on a worker): each series' label map, anatomy rows and overlay.
merge: anatomy.parquet from the part tables; series out counted from the label maps written.

cfg is the segment section plus `deid_key` (the deid section), passed by the flow: the
provided masks are named by raw series UID and matched by its pseudonym.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tasks.common.rejection import Rejected
from tasks.common.sharding import Merged, Plan, ShardResult, chunks
from tasks.common.tables import Rejection, concat_parts, write_rows
from tasks.ct.anatomy import ANATOMY_SCHEMA, STAGE, AnatomyGroups, build_groups, measure
from tasks.ct.nifti_io import read_nifti, spacing, write_nifti

STUDY_COLUMNS = ["series_id", "study_id", "patient_id", "volume", "source"]
LABELS_SUFFIX = ".nii.gz"


def anatomy_groups(cfg: dict) -> AnatomyGroups:
    return build_groups(cfg["anatomies"], task=cfg["totalsegmentator"]["task"])


def segment_series(row: dict, cfg: dict, groups: AnatomyGroups, in_dir: str, out_dir: str,
                   mask_index: dict | None) -> dict:
    """Label map, anatomy rows and overlay of one series; {"rows": [...]} or {"rejected": Rejection}."""
    series_id = row["series_id"]
    img = read_nifti(Path(in_dir) / row["volume"])
    volume = np.asanyarray(img.dataobj)
    backend = cfg["backend"]
    try:
        if backend == "provided":
            from tasks.ct.provided_backend import load_mask

            path = (mask_index or {}).get(series_id)
            if path is None:
                return {"rejected": Rejection(series_id, row.get("source") or "", "no_mask",
                                              "no provided mask for this series", STAGE)}
            labels = load_mask(path, volume.shape, img.affine, set(groups.names), cfg["geometry_tolerance_mm"])
        else:
            from tasks.ct.totalseg_backend import resolve_roi_subset, segment_image

            ts_cfg = cfg["totalsegmentator"]
            labels = segment_image(img, ts_cfg, resolve_roi_subset(ts_cfg["roi_subset"], groups.class_names()))
    except Rejected as exc:
        return {"rejected": Rejection(series_id, row.get("source") or "", exc.reason, exc.detail, STAGE)}
    write_nifti(labels, img.affine, Path(out_dir) / "labels" / f"{series_id}{LABELS_SUFFIX}")
    rows = measure(labels, img.affine, groups)
    for r in rows:
        r.update(series_id=series_id, study_id=row["study_id"], patient_id=row["patient_id"], backend=backend)
    if cfg["overlays"]:
        from tasks.ct.overlays import render_overlay

        render_overlay(volume, labels, spacing(img.affine), groups.ids,
                       Path(out_dir) / "overlays" / f"{series_id}.png")
    return {"rows": rows}


def plan(cfg: dict, out: Path) -> Plan:
    groups = anatomy_groups(cfg)  # start-up validation of segment.anatomies
    masks: dict[str, str] = {}
    if cfg["backend"] == "provided":
        from tasks.ct.provided_backend import index_masks

        masks = index_masks(cfg["provided"]["masks_dir"], cfg["deid_key"])
    else:
        from tasks.ct.totalseg_backend import check_weights, configure_home, resolve_roi_subset

        ts_cfg = cfg["totalsegmentator"]
        configure_home(ts_cfg["home_dir"])
        check_weights(ts_cfg["task"], ts_cfg["fast"], resolve_roi_subset(ts_cfg["roi_subset"], groups.class_names()))
    studies = pq.read_table(Path(cfg["input_dir"]) / "studies.parquet", columns=STUDY_COLUMNS).to_pylist()
    shards = [(index, rows, {r["series_id"]: masks[r["series_id"]] for r in rows if r["series_id"] in masks})
              for index, rows in enumerate(chunks(studies, cfg["series_per_task"]))]
    return Plan(items=[r["series_id"] for r in studies], shards=shards,
                counts={"backend": cfg["backend"],
                        "anatomies_from_other_tasks": sorted(groups.other_task)})  # not in this label map


def segment_shard(shard: tuple[int, list[dict], dict[str, str]], cfg: dict, out: str) -> ShardResult:
    """Segment one shard of series (mask paths by series id); value: the part table's path."""
    index, studies, masks = shard
    if cfg["backend"] == "totalsegmentator":
        from tasks.ct.totalseg_backend import configure_home

        configure_home(cfg["totalsegmentator"]["home_dir"])  # in the worker process too
    groups = anatomy_groups(cfg)
    rows, rejected = [], []
    for study in studies:
        result = segment_series(study, cfg, groups, cfg["input_dir"], out, masks)
        if "rejected" in result:
            rejected.append(result["rejected"].as_row())
        else:
            rows.extend(result["rows"])
    part = Path(out) / "_parts" / f"anatomy-{index:06d}.parquet"
    write_rows(rows, ANATOMY_SCHEMA, part)
    return ShardResult(value=str(part), rejected=rejected)


def merge(cfg: dict, out: Path, plan: Plan, results: list[ShardResult], fan_out) -> Merged:
    (out / "overlays").mkdir(exist_ok=True)  # a DVC out even with overlays off (then empty)
    anatomy_rows = concat_parts([r.value for r in results], ANATOMY_SCHEMA, out / "anatomy.parquet",
                                sort_by=("series_id", "anatomy"))
    labelled = {p.name[:-len(LABELS_SUFFIX)] for p in (out / "labels").glob(f"*{LABELS_SUFFIX}")}
    return Merged(items_out=len(labelled), accounted=labelled, counts={"anatomy_rows": anatomy_rows})
