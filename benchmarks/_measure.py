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
    """Peak RSS of the tree summed, and of its largest process."""

    def __init__(self, interval: float = 0.1, pid: int | None = None):
        super().__init__(interval, pid)
        self.peak_total = 0
        self.peak_single = 0

    def sample(self, processes):
        total = 0
        for proc in processes:
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            self.peak_single = max(self.peak_single, rss)
        self.peak_total = max(self.peak_total, total)


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path
