"""`segment` stage: one label map per converted CT series, anatomy measurements, QA overlays.

Reads ct_convert's studies.parquet and volumes; writes to segment.output_dir:
  labels/<series_id>.nii.gz   uint8 TotalSegmentator v2 `total` class ids, same grid as the volume
  anatomy.parquet             per (series, anatomy): voxels, ml, bbox, FOV contact (tasks.ct.anatomy)
  overlays/<series_id>.png    axial, coronal, sagittal slices with anatomy colours
  rejected.parquet, summary.json, timing.json
Backend `provided` (masks shipped with the data) or `totalsegmentator` (the real model).
The work is in tasks/ct/segment_stage.py (plan, segment_shard, merge); the runner owns the rest.
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows._stage import run_stage_cli
from tasks.common.locations import UNREADABLE_SOURCE
from tasks.ct import segment_stage
from tasks.ct.deid import deid_key

SEGMENT = ShardedStage(name="segment", unit="series", plan=segment_stage.plan, work=segment_stage.segment_shard,
                       merge=segment_stage.merge,
                       open_failures=(UNREADABLE_SOURCE,), source_params=("provided.masks_dir",))


@flow(name="segment")
def segment_flow(params: dict) -> dict:
    cfg = {**params["segment"], "deid_key": deid_key(params)}  # provided masks are matched by pseudonym
    return run_sharded(SEGMENT, cfg, cfg["output_dir"])


if __name__ == "__main__":
    run_stage_cli(segment_flow)
