"""`ct_convert` stage: CT studies (DICOM series in any layout, NIfTI; or a CT-RATE folder
with its metadata CSVs when ct_convert.input_kind is ct_rate) -> de-identified canonical
int16 HU volumes.

Outputs in ct_convert.output_dir: volumes/<series_id>.nii.gz, studies.parquet (columns
documented in tasks.ct.convert), rejected.parquet, summary.json, timing.json.
The work is in tasks/ct/convert_stage.py (plan with its header scan, convert_shard, merge);
the runner owns the rest.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows._runner import ShardedStage, run_sharded
from flows._stage import run_stage_cli
from tasks.common.locations import UNREADABLE_SOURCE
from tasks.ct import convert_stage
from tasks.ct.convert import local_source
from tasks.ct.deid import deid_key

CT_CONVERT = ShardedStage(name="ct_convert", unit="series", plan=convert_stage.plan, work=convert_stage.convert_shard,
                          merge=convert_stage.merge, plan_fans_out=True,
                          open_failures=(UNREADABLE_SOURCE,), source_params=("source",))


@flow(name="ct_convert")
def ct_convert_flow(params: dict) -> dict:
    cfg = {**params["ct_convert"], "source_paths": params["deid"]["source_paths"], "deid_key": deid_key(params)}
    # an fsspec URL is copied into the output folder being built, which every worker sees (a
    # system temporary folder would be this machine's alone); run_sharded removes _parts at the end
    staging = Path(cfg["output_dir"]) / "_parts"
    staging.mkdir(parents=True, exist_ok=True)
    with local_source(cfg["source"], str(staging)) as root:
        return run_sharded(CT_CONVERT, {**cfg, "root": root}, cfg["output_dir"])


if __name__ == "__main__":
    run_stage_cli(ct_convert_flow)
