"""The shape both training stages share: prepare the data, run the loop, write the outputs.

Each step is a Prefect task; the loop runs in this process (a Dask worker would pin
torch to one thread) or under torchrun when `<stage>.nproc_per_node` > 1.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._outputs import atomic_output_dir
from flows._stage import with_output_dir
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
        final = Path(params[name]["output_dir"]).absolute()
        checkpoints = params[name]["checkpoint_dir"]
        keep = [str(Path(checkpoints).absolute().relative_to(final))] \
            if checkpoints and Path(checkpoints).absolute().is_relative_to(final) else []
        with atomic_output_dir(final, keep) as build:
            staged = with_output_dir(params, name, build)
            # what the stage needs from other sections, passed explicitly here
            staged = {**staged, name: {**staged[name], **stage.other_sections(params)}}
            summary = StageSummary(name, unit=unit)
            nproc = int(staged[name]["nproc_per_node"])
            if nproc > 1:
                launch_torchrun(name, staged, nproc)
                return {}
            prep = prepare_task(staged)
            print(f"[{name}] {prep.counts}", flush=True)
            result = train_task(prep)
            metrics = write_task(prep, result, staged, summary)
        print(summary.report(), flush=True)
        print(f"[{name}] metrics {metrics}", flush=True)
        return metrics

    return train
