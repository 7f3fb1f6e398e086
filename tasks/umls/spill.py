"""External sorting for vocabulary builds: records spilled to sorted runs on disk, read back merged.

A full UMLS release has millions of rows; the index wants them by concept and by term.
Records (tuples of str/int, as marshal writes them) are sorted in memory a chunk at a
time, written as a run, and merged with heapq.merge, so memory holds one chunk plus one
block per run. The sort is stable (a run is sorted stably, and heapq.merge breaks ties
by run order), so records with one key keep the order they were added in.
"""
from __future__ import annotations

import heapq
import itertools
import marshal
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

BLOCK = 4096    # records per marshal call: fewer calls, bounded read-back memory
CHUNK = 100_000  # records sorted in memory per run


def read_blocks(path: Path) -> Iterator[tuple]:
    """The records of a file of marshalled blocks, in order."""
    with open(path, "rb") as handle:
        while True:
            try:
                block = marshal.load(handle)
            except EOFError:
                return
            yield from block


class SortedSpill:
    """add() records, then iterate them in key order (stable)."""

    def __init__(self, folder: str | Path, key: Callable[[tuple], object], chunk: int | None = None):
        self.folder = Path(tempfile.mkdtemp(prefix="spill_", dir=folder))
        self.key, self.chunk = key, chunk or CHUNK
        self.buffer: list[tuple] = []
        self.runs: list[Path] = []
        self.count = 0
        self._last = None
        self.in_order = True  # added already sorted: runs are read one after another, no heap

    def add(self, record: tuple) -> None:
        if self.in_order:
            key = self.key(record)
            if self._last is not None and key < self._last:
                self.in_order = False
            self._last = key
        self.buffer.append(record)
        self.count += 1
        if len(self.buffer) >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        if not self.in_order:
            self.buffer.sort(key=self.key)
        path = self.folder / f"run-{len(self.runs):06d}"
        with open(path, "wb") as handle:
            for start in range(0, len(self.buffer), BLOCK):
                marshal.dump(self.buffer[start:start + BLOCK], handle)
        self.runs.append(path)
        self.buffer = []

    def __iter__(self) -> Iterator[tuple]:
        """The records in key order; can be iterated again until remove()."""
        if not self.runs:  # everything fits in memory: no files
            if not self.in_order:
                self.buffer.sort(key=self.key)
            return iter(self.buffer)
        self._flush()
        runs = [read_blocks(path) for path in self.runs]
        if self.in_order:
            return itertools.chain.from_iterable(runs)
        return heapq.merge(*runs, key=self.key)

    def groups(self) -> Iterator[tuple[object, list[tuple]]]:
        """(key, records with that key, in the order added), keys ascending."""
        for key, records in itertools.groupby(self, key=self.key):
            yield key, list(records)

    def remove(self) -> None:
        self.buffer = []
        for path in self.runs:
            path.unlink(missing_ok=True)
        if self.folder.is_dir():
            os.rmdir(self.folder)
