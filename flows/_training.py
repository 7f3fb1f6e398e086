"""The shape both training stages share: prepare the data, run the loop, write the outputs.

Each step is a Prefect task; the loop runs in this process (a Dask worker would pin
torch to one thread) or under torchrun when `<stage>.nproc_per_node` > 1.
"""
from __future__ import annotations

from types import ModuleType

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.common.summary import StageSummary
from tasks.training.common import launch_torchrun


def training_flow(stage: ModuleType, unit: str, prepare_name: str):
    """A Prefect flow for a training stage module (prepare / train / write_outputs)."""
    name = stage.STAGE
    short = name.removeprefix("train_")

    @task(name=prepare_name, cache_policy=NO_CACHE)
    def prepare_task(params: dict):
        return stage.prepare(params)

    @task(name=f"{name}_loop", cache_policy=NO_CACHE)
    def train_task(prep):
        return stage.train(prep)

    @task(name=f"write_{short}_outputs", cache_policy=NO_CACHE)
    def write_task(prep, result, params: dict, summary: StageSummary) -> dict:
        return stage.write_outputs(prep, result, params, summary)

    @flow(name=name)
    def train(params: dict) -> dict:
        summary = StageSummary(name, unit=unit)
        nproc = int((params.get(name) or {}).get("nproc_per_node") or 1)
        if nproc > 1:
            launch_torchrun(name, params, nproc)
            return {}
        prep = prepare_task(params)
        print(f"[{name}] {prep.counts}", flush=True)
        result = train_task(prep)
        metrics = write_task(prep, result, params, summary)
        print(summary.report(), flush=True)
        print(f"[{name}] metrics {metrics}", flush=True)
        return metrics

    return train
