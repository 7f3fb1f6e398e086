"""Run a command with one temporary Prefect server shared by everything it starts.

    python -m flows.with_prefect dvc repro

Without it every stage of `dvc repro` starts its own temporary server (seconds
each); with it they all report to one, which also keeps one run history.
The server and COMMAND die with this process, even on SIGKILL (flows._children);
so do the stages COMMAND starts, because they use this process's server.
"""
from __future__ import annotations

import subprocess
import sys

from flows._children import kill_with_parent
from flows._runtime import ensure_prefect_api


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m flows.with_prefect COMMAND [ARGS...]", file=sys.stderr)
        return 2
    ensure_prefect_api()
    return subprocess.call(argv, preexec_fn=kill_with_parent())


if __name__ == "__main__":
    raise SystemExit(main())
