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


# Exported with PREFECT_API_URL: the pid of the process whose temporary server it is.
PREFECT_SERVER_OWNER_ENV = "MEDCONCEPT_PREFECT_SERVER_OWNER"

_server = None


def ensure_prefect_api() -> None:
    """Give this process and its Dask workers one Prefect API.

    Without PREFECT_API_URL every Dask worker process would start its own temporary
    server; starting one here and exporting its URL lets the workers inherit it.
    The server dies with this process, even on SIGKILL; a process that inherits the
    URL of an ancestor's temporary server dies with that ancestor (flows._children).
    """
    global _server
    if os.environ.get("PREFECT_API_URL"):
        owner = os.environ.get(PREFECT_SERVER_OWNER_ENV)
        if owner:
            _exit_with(int(owner))
        return
    if _server is not None:
        return
    os.environ[PREFECT_SERVER_OWNER_ENV] = str(os.getpid())
    _server = _temporary_server()
    _server.start(timeout=int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    os.environ["PREFECT_API_URL"] = _server.api_url


def _exit_with(owner: int) -> None:
    from flows._children import OwnerGoneError, exit_with_owner

    try:
        exit_with_owner(owner)
    except OwnerGoneError as error:
        raise SystemExit(f"PREFECT_API_URL is stale: {error}; unset it or rerun the whole command") from None


def create_prefect_server_app():
    """The temporary server's ASGI app (a uvicorn factory); the server exits with its owner."""
    from prefect.server.api.server import create_app

    _exit_with(int(os.environ[PREFECT_SERVER_OWNER_ENV]))
    return create_app()


def _temporary_server():
    """Prefect's SubprocessASGIServer (start, health wait, port retry), with a child that
    dies with us: started with kill_with_parent, serving create_prefect_server_app."""
    import subprocess
    import sys

    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    from flows._children import kill_with_parent

    class TemporaryPrefectServer(SubprocessASGIServer):
        # Created first, it is the instance SubprocessASGIServer() returns (one per port,
        # None for "any"): Prefect's own in-process client, whose settings predate
        # PREFECT_API_URL, then reuses it instead of starting a server without our child.

        def _run_uvicorn_command(self) -> subprocess.Popen:
            command = [
                sys.executable, "-m", "uvicorn", "--app-dir", str(REPO_ROOT),
                "--factory", "flows._runtime:create_prefect_server_app",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--log-level", "error", "--lifespan", "on",
            ]
            env = {
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            return subprocess.Popen(command, env=env, preexec_fn=kill_with_parent())

    return TemporaryPrefectServer()
