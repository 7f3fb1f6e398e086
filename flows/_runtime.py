"""Process-wide defaults that keep Prefect, Dask, DVC and friends offline and quiet."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

_OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # The 20 s default times out on two busy cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_UI_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DASK_LOGGING__DISTRIBUTED": "warning",
}


def configure_offline_defaults() -> None:
    """Set offline defaults without overriding anything the user exported."""
    for key, value in _OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_HOME", str(REPO_ROOT / ".prefect"))


_server = None


def ensure_prefect_api() -> None:
    """Give this process and its Dask workers one Prefect API.

    Without PREFECT_API_URL every Dask worker process would start its own temporary
    server; starting one here and exporting its URL lets the workers inherit it.
    """
    global _server
    if os.environ.get("PREFECT_API_URL") or _server is not None:
        return
    from prefect.server.api.server import SubprocessASGIServer

    _server = SubprocessASGIServer()
    _server.start(timeout=int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    os.environ["PREFECT_API_URL"] = _server.api_url
