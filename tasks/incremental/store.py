"""Per-item results kept between runs, keyed by the content hashes of their inputs.

ingest, figures and link_concepts keep each item's result (one package; one article's
figures; one article's concepts) as an entry in a cache folder beside their output folder
(`data/.ingest.cache` beside `data/ingest`). An entry's name is the sha256 of everything the
result depends on: the item's input content hashes, the stage params that reach the item,
the source of every repository module the stage's work imports (tasks.lineage.code_deps)
and the versions of the libraries that shape its bytes. A changed input, param, module or
library is therefore a new key, never a stale hit. A stage then assembles its outputs from
the entries of the items present now, exactly as a run with an empty cache does, so they
are the same bytes.

The cache is not a DVC output: dvc status, dvc.lock and lineage never see it, and deleting
it costs one full recomputation. Entries are written atomically (a temporary name, then a
rename) and never changed; entries no run used for PRUNE_AFTER_S are deleted.

Output shards are entries too (keyed by the entries they are assembled from) and are placed in
the output folder as hard links (`place`): an unchanged shard keeps its inode, size and mtime,
so DVC's state finds its hash without reading it and its cache already holds it; an update
then costs what changed, not the corpus. A use is marked on an entry's access time, never its
modification time, for the same reason. Never edit an output shard in place: it is the cache
entry's bytes too (DVC removes outputs by unlinking, which is safe).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from tasks.common.hashing import sha256_file, sources_digest

PRUNE_AFTER_S = 24 * 3600   # an entry unused this long goes (a day: a run switched back finds it)
# Libraries whose version changes output bytes (JPEG encoding, PDF rendering, tables, NLP).
LIBRARIES = ("lxml", "numpy", "pillow", "pyarrow", "pymupdf", "quickumls", "scispacy", "spacy")
_PARTIAL = re.compile(r"^\.(.+)\.partial$")


def cache_dir_for(output_dir: str | Path) -> Path:
    """The cache folder of a stage's output folder (also of the `.X.partial` one it builds)."""
    out = Path(output_dir)
    match = _PARTIAL.match(out.name)
    return out.parent / f".{match.group(1) if match else out.name}.cache"


def repo_root() -> Path:
    import tasks

    return Path(tasks.__file__).resolve().parent.parent


def _library_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=None)
def code_version(module: str) -> str:
    """sha256 of the sources `module` imports (repository modules, at any depth) and of the
    versions of LIBRARIES."""
    from tasks.lineage.code_deps import module_closure

    root = repo_root()
    digest = sources_digest(root, module_closure(root, module))
    digest.update(json.dumps({name: _library_version(name) for name in LIBRARIES}, sort_keys=True).encode())
    return digest.hexdigest()


def item_key(*parts: Any) -> str:
    """The entry name for a result that depends on exactly `parts` (JSON-able values)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def params_for_key(cfg: dict, layout_keys: Iterable[str]) -> dict:
    """The stage params that reach one item: all but those naming places and shard sizes,
    so a param added later is in the key (a miss), never silently left out (a stale hit)."""
    skip = set(layout_keys) | {"run_root"}
    return {key: cfg[key] for key in sorted(cfg) if key not in skip}


class ItemCache:
    """Entries `<root>/<key[:2]>/<key><suffix>`. With read=False nothing is looked up (every
    item is computed again) but entries are still written, refreshing the cache."""

    def __init__(self, root: str | Path, read: bool = True):
        self.root, self.read = Path(root), read

    @classmethod
    def of(cls, run: dict) -> "ItemCache":
        return cls(run["cache"], run["read"])

    def path(self, key: str, suffix: str) -> Path:
        return self.root / key[:2] / f"{key}{suffix}"

    def hit(self, key: str, suffix: str) -> Path | None:
        """The entry's path when it exists (and reading is on); marks it as used."""
        if not self.read:
            return None
        path = self.path(key, suffix)
        try:
            mark_used(path)
        except FileNotFoundError:
            return None
        return path

    def has(self, key: str, *suffixes: str) -> bool:
        """Whether every piece of the entry exists (and reading is on); marks no use."""
        return self.read and all(self.path(key, suffix).is_file() for suffix in suffixes)

    def temporary(self, key: str, suffix: str) -> Path:
        path = self.path(key, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")

    def commit(self, temporary: Path, key: str, suffix: str) -> Path:
        path = self.path(key, suffix)
        os.replace(temporary, path)
        return path

    def write_json(self, key: str, suffix: str, value: Any) -> Path:
        tmp = self.temporary(key, suffix)
        tmp.write_text(json.dumps(value, sort_keys=True, ensure_ascii=False), encoding="utf-8")
        return self.commit(tmp, key, suffix)

    def read_json(self, key: str, suffix: str) -> Any | None:
        path = self.hit(key, suffix)
        return None if path is None else json.loads(path.read_text(encoding="utf-8"))

    def place(self, key: str, suffix: str, dest: str | Path, build: Callable[[Path], None] | None) -> bool:
        """Put entry `key` at `dest` as a hard link (a copy across filesystems), building it with
        `build(temporary path)` first when there is none (build None: it must exist); True when
        it was reused."""
        entry = self.hit(key, suffix)
        reused = entry is not None
        if not reused:
            if build is None:
                raise FileNotFoundError(f"cache entry {self.path(key, suffix)} is gone")
            tmp = self.temporary(key, suffix)
            build(tmp)
            entry = self.commit(tmp, key, suffix)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() and os.path.samefile(entry, dest):
            return reused  # placed already (a second call with the same folder)
        dest.unlink(missing_ok=True)
        try:
            os.link(entry, dest)
        except OSError:
            shutil.copy2(entry, dest)
        return reused

    def prune(self, live: Iterable[str], older_than_s: float = PRUNE_AFTER_S) -> int:
        """Delete entries whose key is not in `live` and that no run used for `older_than_s`."""
        live = live if isinstance(live, SortedKeys) else set(live)
        cutoff, removed = time.time() - older_than_s, 0
        if not self.root.is_dir():
            return 0
        for folder in self.root.iterdir():
            for path in folder.iterdir() if folder.is_dir() else ():
                key = path.name.split(".", 1)[0]
                try:
                    stat = path.stat()
                    if key not in live and max(stat.st_atime, stat.st_mtime) < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed


class SortedKeys:
    """Entry keys as one sorted fixed-width bytes array: `key in keys` by binary search, at 64
    bytes a key (a set of str costs about three times that)."""

    def __init__(self, keys: np.ndarray):
        self.keys = np.unique(np.asarray(keys, dtype="S64"))

    def __contains__(self, key: str) -> bool:
        wanted = key.encode("ascii", "replace")
        at = int(np.searchsorted(self.keys, wanted))
        return at < len(self.keys) and self.keys[at] == wanted


def mark_used(path: Path) -> None:
    """Set the access time to now and keep the modification time (see the module doc)."""
    stat = os.stat(path)
    os.utime(path, ns=(time.time_ns(), stat.st_mtime_ns))


def fingerprint(files: Iterable[Path], root: Path, memo: Path) -> str:
    """sha256 over the content hashes of `files` (paths relative to `root` included); a file
    whose size and mtime match the memo is not read again (as DVC's own state does)."""
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        known = {}
    seen, digest = {}, hashlib.sha256()
    for path in sorted(files):
        rel, stat = path.relative_to(root).as_posix(), path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
        entry = known.get(rel)
        if not entry or entry[:2] != stamp:
            entry = stamp + [sha256_file(path)]
        seen[rel] = entry
        digest.update(f"{rel}\0{entry[2]}\0".encode())
    if seen != known:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{memo.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(seen, sort_keys=True), encoding="utf-8")
        os.replace(tmp, memo)
    return digest.hexdigest()


RUN_RECORD = "incremental.json"


def run_record(out: Path, stage: str, items: int, processed: int, reused: int, incremental: bool,
               pruned: int, shards_reused: int = 0, **more: int) -> Path:
    """What this run computed and what it reused, for fold_run_record to put in timing.json
    (a run record, like the seconds: an update and a from-scratch run differ there only)."""
    path = Path(out) / RUN_RECORD
    path.write_text(json.dumps({"stage": stage, "items": items, "processed": processed, "reused": reused,
                                "incremental": incremental, "cache_entries_pruned": pruned,
                                "shards_reused": shards_reused, **more}), encoding="utf-8")
    return path


def fold_run_record(out: str | Path) -> dict | None:
    """Move the merge's run record into the runner's timing.json, under "incremental"."""
    record, timing = Path(out) / RUN_RECORD, Path(out) / "timing.json"
    if not record.is_file():
        return None
    value = json.loads(record.read_text(encoding="utf-8"))
    data = json.loads(timing.read_text(encoding="utf-8")) if timing.is_file() else {}
    data["incremental"] = {k: v for k, v in value.items() if k != "stage"}
    timing.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    record.unlink()
    return data["incremental"]
