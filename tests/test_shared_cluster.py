"""flows.with_prefect shares one Dask cluster with the stages it runs (flows/_cluster.py), and a
stage that asks for other workers or holds other code than that cluster's starts its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from flows import _cluster
from tasks.common.params import load_params


def _params(repo_root, **dask) -> dict:
    params = load_params(repo_root / "params.yaml", [])
    params["dask"].update(dask)
    return params


@pytest.fixture
def no_cluster_env(monkeypatch):
    monkeypatch.delenv(_cluster.DASK_ADDRESS_ENV, raising=False)
    monkeypatch.delenv(_cluster.SHARED_SPEC_ENV, raising=False)
    return monkeypatch


def test_without_an_address_a_stage_starts_its_own_cluster(no_cluster_env, repo_root):
    assert _cluster.scheduler_address(_params(repo_root, address=None)) == (None, "local cluster")


def test_a_named_scheduler_is_used_as_it_is(no_cluster_env, repo_root):
    assert _cluster.scheduler_address(_params(repo_root, address="tcp://10.0.0.1:8786")) == (
        "tcp://10.0.0.1:8786", "scheduler")
    no_cluster_env.setenv(_cluster.DASK_ADDRESS_ENV, "tcp://10.0.0.2:8786")
    assert _cluster.scheduler_address(_params(repo_root))[0] == "tcp://10.0.0.2:8786"


def test_the_shared_cluster_is_used_only_when_it_is_what_the_stage_asks_for(no_cluster_env, repo_root):
    params = _params(repo_root, address=None, n_workers=2)
    no_cluster_env.setenv(_cluster.DASK_ADDRESS_ENV, "tcp://127.0.0.1:9999")
    no_cluster_env.setenv(_cluster.SHARED_SPEC_ENV, json.dumps(_cluster.cluster_spec(params["dask"])))
    assert _cluster.scheduler_address(params) == ("tcp://127.0.0.1:9999", "shared cluster")

    address, why = _cluster.scheduler_address(_params(repo_root, address=None, n_workers=3))
    assert address is None and "sizing" in why

    other_code = dict(_cluster.cluster_spec(params["dask"]), code="0" * 64)
    no_cluster_env.setenv(_cluster.SHARED_SPEC_ENV, json.dumps(other_code))
    address, why = _cluster.scheduler_address(params)
    assert address is None and "code" in why


def test_code_hash_changes_with_any_source_file(tmp_path):
    for folder in _cluster.CODE_FOLDERS:
        (tmp_path / folder).mkdir()
    (tmp_path / "tasks" / "a.py").write_text("x = 1\n")
    before = _cluster.code_hash(tmp_path)
    (tmp_path / "tasks" / "a.py").write_text("x = 2\n")
    assert _cluster.code_hash(tmp_path) != before


PROBE = textwrap.dedent("""
    import json, os
    from distributed import Client
    from flows._cluster import scheduler_address
    from tasks.common.params import load_params

    with Client(os.environ["MEDCONCEPT_DASK_ADDRESS"], timeout=60) as client:
        workers = client.run(lambda: (os.getpid(), os.environ.get("PREFECT_API_URL")))
    print(json.dumps({"workers": sorted(workers.values()), "api": os.environ["PREFECT_API_URL"],
                      "choice": scheduler_address(load_params("params.yaml", []))}))
""")


def test_with_prefect_starts_one_cluster_for_every_process_it_runs(tmp_path, repo_root):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["dask"].update(n_workers=2, processes=True, address=None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    for name in ("PREFECT_API_URL", _cluster.DASK_ADDRESS_ENV, _cluster.SHARED_SPEC_ENV):
        env.pop(name, None)
    (tmp_path / "probe.py").write_text(PROBE)
    probe = f"{sys.executable} probe.py"
    result = subprocess.run([sys.executable, "-m", "flows.with_prefect", "sh", "-c", f"{probe} && {probe}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (json.loads(line) for line in result.stdout.strip().splitlines()[-2:])
    assert len(first["workers"]) == 2
    assert first["workers"] == second["workers"]  # the same worker processes, kept warm
    assert {api for _, api in first["workers"]} == {first["api"]}  # they report to the one server
    assert first["choice"][1] == "shared cluster"


def test_no_cluster_is_shared_when_the_params_ask_for_threads(tmp_path, repo_root):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["dask"].update(processes=False, address=None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    env.pop(_cluster.DASK_ADDRESS_ENV, None)
    probe = "import os; print(os.environ.get('MEDCONCEPT_DASK_ADDRESS', 'none'))"
    result = subprocess.run([sys.executable, "-m", "flows.with_prefect", sys.executable, "-c", probe],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "none"
