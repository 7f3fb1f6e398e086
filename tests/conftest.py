"""Session-wide fixtures: one Prefect test server, the real-data folder, the repo root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import flows  # noqa: F401  (sets Prefect's offline defaults before Prefect is imported)

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DATA_ENV = "MEDCONCEPT_TEST_DATA"
# The longest files first: with `-n 2 --dist loadfile` (medconcept.sh test) one worker takes
# the end-to-end clone while the other runs the determinism pair and then the rest, instead
# of either ending last.
LONGEST_FIRST = ("test_end_to_end.py", "test_determinism.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """One temporary Prefect server for the whole session, exported to Dask workers."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, found through MEDCONCEPT_TEST_DATA; tests skip without it."""
    value = os.environ.get(TEST_DATA_ENV)
    if not value or not Path(value).is_dir():
        pytest.skip(f"real test data not available (set {TEST_DATA_ENV})")
    return Path(value)


def stage_params(repo_root: Path, **overrides) -> dict:
    """params.yaml with a single-threaded local Dask cluster, plus overrides."""
    from tasks.common.params import load_params

    base = [
        "dask.n_workers=1",
        "dask.processes=false",
    ]
    extra = [f"{key}={value}" for key, value in overrides.items()]
    return load_params(repo_root / "params.yaml", base + extra)
