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

from flows._outputs import atomic_output_dir
from flows._runtime import ensure_prefect_api
from flows._stage import cli_params, make_task_runner
from tasks.evaluate.stage import MODELS
from tasks.schema import with_absolute_locations


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
