"""Run a command with one temporary Prefect server and one Dask cluster shared by everything
it starts.

    python -m flows.with_prefect dvc repro

Without it every stage of `dvc repro` starts its own temporary server and its own Dask
workers (seconds each, most of what an update costs); with it they all report to one
server, which also keeps one run history, and send their tasks to one set of warm workers
sized by params.yaml's `dask` section (flows._cluster: a stage whose `dask` params or code
differ from the shared cluster's starts its own). No cluster is started when a scheduler is
named (MEDCONCEPT_DASK_ADDRESS, `dask.address`), when `dask.processes` is false, or when
there is no params.yaml here.
The server, the workers and COMMAND die with this process, even on SIGKILL
(flows._children); so do the stages COMMAND starts, because they use this process's server.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

from flows._children import kill_with_parent
from flows._cluster import start_shared_cluster
from flows._runtime import ensure_prefect_api
from tasks.common.params import ParamsError, load_params

PARAMS_FILE = "params.yaml"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m flows.with_prefect COMMAND [ARGS...]", file=sys.stderr)
        return 2
    ensure_prefect_api()  # first: the workers inherit its URL
    try:
        params = load_params(PARAMS_FILE, []) if Path(PARAMS_FILE).is_file() else None
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cluster = start_shared_cluster(params) if params else None
    with cluster if cluster is not None else contextlib.nullcontext():
        return subprocess.call(argv, preexec_fn=kill_with_parent())


if __name__ == "__main__":
    raise SystemExit(main())
