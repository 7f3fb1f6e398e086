"""`fvlm_prepare` stage: fVLM training tensors, once per converted CT series, at the model grid.

    python -m flows.fvlm_prepare [--params params.yaml] [-S fvlm_prepare.grid=[48,64,64]]

Reads ct_convert's studies.parquet and volumes, segment's label maps and anatomy.parquet;
writes to fvlm_prepare.output_dir:
  tensors/<series_id>.zip   HU-window channels (float16 [C, D, H, W] in [-1, 1]) and anatomy
                            masks (bool [A, D, H, W], bit-packed), tasks.training.fvlm_tensors
  tensors.parquet           one row per series: its file, grid, anatomies, mask voxels, sha256
  prepared.json             grid, hu_windows, anatomies, axes, mask_pooling (train_fvlm checks them)
  rejected.parquet, summary.json, timing.json
HU windows, anatomies and the model grid come from train_fvlm (and segment.anatomies).
The work is in tasks/training/fvlm_prepare_stage.py (plan, prepare_shard, merge).
"""
from __future__ import annotations

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows._stage import run_stage_cli
from tasks.training import fvlm_prepare_stage

FVLM_PREPARE = ShardedStage(name="fvlm_prepare", unit="series", plan=fvlm_prepare_stage.plan,
                            work=fvlm_prepare_stage.prepare_shard, merge=fvlm_prepare_stage.merge)


@flow(name="fvlm_prepare")
def fvlm_prepare_flow(params: dict) -> dict:
    cfg = {**params["fvlm_prepare"], **fvlm_prepare_stage.other_sections(params)}
    return run_sharded(FVLM_PREPARE, cfg, cfg["output_dir"])


if __name__ == "__main__":
    run_stage_cli(fvlm_prepare_flow)
