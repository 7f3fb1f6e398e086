"""The Dask cluster a stage's tasks run on, and the one `flows.with_prefect` shares.

A stage uses, in this order: the scheduler named by MEDCONCEPT_DASK_ADDRESS or
`dask.address` (a real cluster), else a LocalCluster of its own sized by the `dask` params.

`flows.with_prefect` starts one LocalCluster for every stage of its command (a `dvc repro`)
and exports its address, so each stage skips starting workers and importing its modules
there (seconds per stage; most of an update's cost). It also exports what the cluster is
(SHARED_SPEC_ENV): the `dask` params it was sized by, the repository it imports code from
and a hash of that code. A stage whose own `dask` params, repository or code differ (an
override, `dvc exp run --temp` in another folder, a file edited mid-run) starts its own
LocalCluster instead, so a shared worker never runs code other than the stage's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from flows._runtime import REPO_ROOT

DASK_ADDRESS_ENV = "MEDCONCEPT_DASK_ADDRESS"
SHARED_SPEC_ENV = "MEDCONCEPT_DASK_SHARED_SPEC"
SIZING_KEYS = ("n_workers", "threads_per_worker", "processes", "memory_limit")
CODE_FOLDERS = ("flows", "tasks", "models")


def local_cluster_kwargs(dask_params: dict) -> dict:
    n_workers = dask_params["n_workers"] or max(1, os.cpu_count() or 1)
    return {"n_workers": int(n_workers), "threads_per_worker": dask_params["threads_per_worker"],
            "processes": dask_params["processes"], "memory_limit": dask_params["memory_limit"],
            "dashboard_address": dask_params["dashboard_address"]}


def code_hash(root: Path = REPO_ROOT) -> str:
    """sha256 of the Python sources a worker may import from this repository."""
    from tasks.common.hashing import sources_digest

    rels = [p.relative_to(root).as_posix() for folder in CODE_FOLDERS for p in sorted((root / folder).rglob("*.py"))]
    return sources_digest(root, rels).hexdigest()


def cluster_spec(dask_params: dict) -> dict:
    """What a shared cluster must match for a stage to use it."""
    return {"sizing": {key: dask_params[key] for key in SIZING_KEYS}, "repo": str(REPO_ROOT),
            "code": code_hash()}


def scheduler_address(params: dict) -> tuple[str | None, str]:
    """(the scheduler this stage's tasks go to, or None for a LocalCluster of its own; why)."""
    address = os.environ.get(DASK_ADDRESS_ENV) or params["dask"]["address"]
    shared = os.environ.get(SHARED_SPEC_ENV)
    if not address:
        return None, "local cluster"
    if not shared or address != os.environ.get(DASK_ADDRESS_ENV):
        return address, "scheduler"
    spec, wanted = json.loads(shared), cluster_spec(params["dask"])
    differs = [name for name in ("sizing", "repo", "code") if spec.get(name) != wanted[name]]
    if differs:  # the shared workers are not what this stage asks for, or hold other code
        return None, f"local cluster (the shared one differs in {', '.join(differs)})"
    return address, "shared cluster"


def make_task_runner(params: dict):
    """A DaskTaskRunner on the scheduler chosen by scheduler_address, else a LocalCluster."""
    from prefect_dask import DaskTaskRunner

    address, what = scheduler_address(params)
    print(f"[dask] tasks run on: {what}{f' {address}' if address else ''}", flush=True)
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs=local_cluster_kwargs(params["dask"]))


def start_shared_cluster(params: dict):
    """A LocalCluster for every stage this process's children run, its address exported; None
    when a scheduler is already named or the params ask for threads (not reachable from other
    processes)."""
    dask_params = params["dask"]
    if os.environ.get(DASK_ADDRESS_ENV) or dask_params["address"] or not dask_params["processes"]:
        return None
    from distributed import LocalCluster

    cluster = LocalCluster(**local_cluster_kwargs(dask_params))
    os.environ[DASK_ADDRESS_ENV] = cluster.scheduler_address
    os.environ[SHARED_SPEC_ENV] = json.dumps(cluster_spec(dask_params), sort_keys=True)
    return cluster
