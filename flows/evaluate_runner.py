"""Where the evaluate stages write, and their command line.

Each model's stage (`evaluate_conceptclip`, `evaluate_fvlm`) builds `<evaluate.output_dir>/<model>/`
aside and swaps it in; the headline stage (`evaluate`) builds `evaluate.output_dir` the same way
and carries the model folders over, so neither ever leaves a mix of two runs, and neither
removes the other's outputs. Otherwise as flows._stage.run_stage: locations made absolute
once, the Dask task runner the params ask for, `--params` / `-S` on the command line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from prefect import flow

from flows._outputs import atomic_output_dir
from flows._runner import ShardedStage, run_sharded
from flows._runtime import ensure_prefect_api
from flows._cluster import make_task_runner
from flows._stage import cli_params
from tasks.evaluate import stage
from tasks.evaluate.stage import MODELS
from tasks.schema import resolve_training_preset, with_absolute_locations


def model_flow(model: str, work: Callable, training_section: str):
    """The flow of one model's evaluate stage: `work` scores it; the model's training
    section (its preset applied) is what it takes from another section (declared in dvc.yaml)."""
    sharded = ShardedStage(name=f"evaluate_{model}", unit="models", plan=stage.plan_model, work=work,
                           merge=stage.merge_model)

    def evaluate_model(params: dict, output_dir: str) -> dict:
        cfg = {**params["evaluate"], "model": model,
               training_section: resolve_training_preset(params[training_section])}
        return run_sharded(sharded, cfg, output_dir)

    return flow(name=f"evaluate_{model}")(evaluate_model)


def run_evaluate_stage(flow: Callable, params: dict, model: str | None) -> Any:
    """Run `flow(params=..., output_dir=<folder being built>)`: model None is the headline."""
    params = with_absolute_locations(params, Path.cwd())
    root = Path(params["evaluate"]["output_dir"])
    final, keep = (root / model, ()) if model else (root, tuple(MODELS))
    runner = make_task_runner(params)
    with atomic_output_dir(final, keep=keep) as build:
        return flow.with_options(task_runner=runner)(params=params, output_dir=str(build))


def run_evaluate_cli(flow: Callable, model: str | None, argv: Sequence[str] | None = None) -> Any:
    params = cli_params(flow.name, argv)
    ensure_prefect_api()
    return run_evaluate_stage(flow, params, model)
