"""train_fvlm: fVLM (anatomy-level CT-report alignment) on volumes, label maps and descriptions.

    python -m flows.train_fvlm [--params params.yaml] [-S train_fvlm.preset=base]

One Prefect task prepares the data, one runs the training loop in this process (or
under torchrun when train_fvlm.nproc_per_node > 1), one writes the outputs.
"""
from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.common.summary import StageSummary
from tasks.training import fvlm_stage as stage
from tasks.training.common import launch_torchrun, run_training_cli

STAGE = stage.STAGE


@task(name="prepare_ct", cache_policy=NO_CACHE)
def prepare_task(params: dict):
    return stage.prepare(params)


@task(name="train_fvlm_loop", cache_policy=NO_CACHE)
def train_task(prep):
    return stage.train(prep)


@task(name="write_fvlm_outputs", cache_policy=NO_CACHE)
def write_task(prep, result, params: dict, summary: StageSummary) -> dict:
    return stage.write_outputs(prep, result, params, summary)


@flow(name=STAGE)
def train_fvlm_flow(params: dict) -> dict:
    summary = StageSummary(STAGE, unit="studies")
    nproc = int((params.get(STAGE) or {}).get("nproc_per_node") or 1)
    if nproc > 1:
        launch_torchrun(STAGE, params, nproc)
        return {}
    prep = prepare_task(params)
    print(f"[{STAGE}] {prep.counts}", flush=True)
    result = train_task(prep)
    metrics = write_task(prep, result, params, summary)
    print(summary.report(), flush=True)
    print(f"[{STAGE}] metrics {metrics}", flush=True)
    return metrics


if __name__ == "__main__":
    run_training_cli(train_fvlm_flow)
