"""What every stage flow shares: the command line, the Dask task runner, shard fan-out.

A stage module defines a Prefect flow taking the whole params dict and calls
`run_stage_cli(flow)` under `if __name__ == "__main__":`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from flows._cluster import make_task_runner
from flows._outputs import atomic_output_dir
from flows._runtime import ensure_prefect_api
from tasks.common.params import ParamsError, load_params
from tasks.common.sharding import StageConfigError
from tasks.schema import with_absolute_locations


def build_arg_parser(stage: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m flows.{stage}",
        description=f"Run the {stage!r} stage as a Prefect flow.",
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one param, as `dvc exp run -S` does (repeatable)",
    )
    return parser


def gather(futures: Iterable, summary=None) -> list:
    """Resolve Prefect futures in submission order; a failed shard raises its error.

    Prefect 3 does not fail a flow for a failed task by itself, so results are
    resolved explicitly here.
    """
    futures = list(futures)
    results = []
    for done, future in enumerate(futures, start=1):
        results.append(future.result())
        if summary is not None:
            summary.progress(done, len(futures))
    return results


def cli_params(stage: str, argv: Sequence[str] | None = None) -> dict:
    """Params from `--params F` and `-S k=v` overrides; a bad override exits with status 2."""
    args = build_arg_parser(stage).parse_args(argv)
    try:
        params = load_params(args.params, args.overrides)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    params.setdefault("_meta", {})["params_file"] = str(Path(args.params))
    return params


def run_stage_cli(flow: Callable, argv: Sequence[str] | None = None) -> Any:
    params = cli_params(getattr(flow, "name", None) or flow.__name__, argv)
    ensure_prefect_api()
    try:
        return run_stage(flow, params)
    except StageConfigError as exc:  # a wrong location, said in one line like a wrong param
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def run_in_process_cli(flow: Callable, argv: Sequence[str] | None = None) -> Any:
    """The same command line for a flow whose work runs in this process (training: a Dask
    worker would pin torch to one thread); the flow swaps its own outputs in."""
    params = cli_params(getattr(flow, "name", None) or flow.__name__, argv)
    ensure_prefect_api()
    return flow(params=params)


def with_output_dir(params: dict, stage: str, output_dir: str | Path) -> dict:
    """params with `<stage>.output_dir` pointing at the folder being built."""
    return {**params, stage: {**params[stage], "output_dir": str(output_dir)}}


def run_stage(flow: Callable, params: dict) -> Any:
    """Run a stage flow with the task runner its params ask for: locations made absolute
    once, here (workers may run elsewhere), outputs built aside and swapped in at the end."""
    stage = flow.name
    params = with_absolute_locations(params, Path.cwd())
    runner = make_task_runner(params)
    with atomic_output_dir(params[stage]["output_dir"]) as build:
        return flow.with_options(task_runner=runner)(params=with_output_dir(params, stage, build))
