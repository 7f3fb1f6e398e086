"""Shared benchmark helpers: peak RSS of a process tree, JSON output."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results"


class TreeSampler:
    """A background thread that calls `sample(processes)` every `interval` seconds with a
    process (this one by default) and all its descendants, until the `with` block ends."""

    def __init__(self, interval: float = 0.1, pid: int | None = None):
        self.interval = interval
        self.root = psutil.Process(pid or os.getpid())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self, processes: list[psutil.Process]) -> None:
        raise NotImplementedError

    def _run(self):
        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                processes = []
            self.sample(processes)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class PeakRSS(TreeSampler):
    """Peak RSS of the tree summed, and of its largest process; with `pss`, also the peak of
    the tree's summed PSS (a page shared by forked processes counted once, split between
    them, where RSS counts it in each: the memory the tree really holds)."""

    def __init__(self, interval: float = 0.1, pid: int | None = None, pss: bool = False):
        super().__init__(interval, pid)
        self.pss = pss
        self.peak_total = 0
        self.peak_single = 0
        self.peak_pss_total = 0

    def sample(self, processes):
        total = total_pss = 0
        for proc in processes:
            try:
                info = proc.memory_full_info() if self.pss else proc.memory_info()
                rss, total_pss = info.rss, total_pss + getattr(info, "pss", 0)
            except psutil.Error:
                continue
            total += rss
            self.peak_single = max(self.peak_single, rss)
        self.peak_total = max(self.peak_total, total)
        self.peak_pss_total = max(self.peak_pss_total, total_pss)


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path
