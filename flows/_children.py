"""Processes that die with the process that owns them, even when it is SIGKILLed.

A SIGKILL cannot be trapped, so the dying process cannot clean up; what it started
must notice by itself:

- a direct child started with `kill_with_parent()` as its `preexec_fn` asks the Linux
  kernel (prctl PR_SET_PDEATHSIG) for a SIGKILL when its parent dies; the request
  survives exec. The kernel sends it when the *thread* that started the child exits,
  so it is only requested from the main thread.
- a deeper descendant (a stage run by dvc under `flows.with_prefect`) calls
  `exit_with_owner(pid)`: a daemon thread blocks on a pidfd of the owner (no polling)
  and kills this process when the owner exits. Without pidfds (macOS) the thread
  checks once a second whether the owner is still alive; there a direct child that
  runs none of our code (the command of `flows.with_prefect`) outlives its parent,
  while the stages it runs still stop.

Dask's LocalCluster workers need neither: distributed's AsyncProcess already exits a
worker whose parent's pipe closes.
"""
from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
import time
from typing import Callable

PR_SET_PDEATHSIG = 1
OWNER_POLL_SECONDS = 1.0
# exit status of a child whose parent died between fork and prctl
PARENT_GONE_EXIT = 70

_watched_owner: int | None = None


class OwnerGoneError(RuntimeError):
    """The process this one was to die with has already exited."""


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def kill_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen that has the child SIGKILLed when we die.

    None (start the child normally) off Linux and outside the main thread; there the
    child relies on `exit_with_owner`.
    """
    prctl = _prctl()  # resolved here: the child between fork and exec only calls it
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def request_kill_on_parent_death() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
            os._exit(PARENT_GONE_EXIT)

    return request_kill_on_parent_death


def _is_ancestor(pid: int) -> bool:
    import psutil

    return any(parent.pid == pid for parent in psutil.Process().parents())


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _wait_on_pidfd(pidfd: int) -> None:
    select.select([pidfd], [], [])  # readable once the process has exited
    _kill_self()


def _poll_owner(owner: int) -> None:
    while True:
        time.sleep(OWNER_POLL_SECONDS)
        if not _is_ancestor(owner):
            _kill_self()


def exit_with_owner(owner: int) -> None:
    """SIGKILL this process as soon as `owner`, one of its ancestors, exits.

    Raises OwnerGoneError when `owner` is no longer an ancestor (it has exited, and
    this process was re-parented). Calling it again for the same owner does nothing.
    """
    global _watched_owner
    if owner == os.getpid() or owner == _watched_owner:
        return
    gone = OwnerGoneError(f"process {owner}, whose temporary Prefect server this process uses, has exited")
    if not _is_ancestor(owner):
        raise gone
    watch, args = _poll_owner, (owner,)
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(owner)
        except ProcessLookupError:
            raise gone from None
        except OSError:  # a kernel before 5.3: poll
            pidfd = None
        if pidfd is not None:
            # Checked again with the pidfd open: the pid was not reused in between.
            if not _is_ancestor(owner):
                os.close(pidfd)
                raise gone
            watch, args = _wait_on_pidfd, (pidfd,)
    threading.Thread(target=watch, args=args, name=f"exit-with-{owner}", daemon=True).start()
    _watched_owner = owner
