"""The chain of DVC stages behind an artifact, read from dvc.lock (at any git revision)."""
from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import dvc.api
import yaml


@dataclass
class StageRecord:
    name: str
    cmd: str
    params: dict
    deps: list[dict]
    outs: list[dict]
    upstream: list[str]
    counts: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"stage": self.name, "cmd": self.cmd, "params": self.params, "deps": self.deps,
                "outs": self.outs, "upstream": self.upstream, "counts": self.counts}


def read_text(root: Path, path: str, rev: str | None) -> str:
    """A git- or DVC-tracked file at a revision, through DVC's API (workspace when rev is None)."""
    if rev is None:
        return (root / path).read_text(encoding="utf-8")
    return dvc.api.read(path, repo=str(root), rev=rev, mode="r", encoding="utf-8")


def git_commit(root: Path, rev: str | None) -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", rev or "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if rev is None else False
    return {"commit": commit or None, "rev": rev or "workspace", "uncommitted_changes": dirty}


def _is_under(path: str, out: str) -> bool:
    return path == out or path.startswith(out.rstrip("/") + "/")


class Lineage:
    def __init__(self, root: str | Path = ".", rev: str | None = None):
        self.root = Path(root).resolve()
        self.rev = rev
        self.lock = yaml.safe_load(read_text(self.root, "dvc.lock", rev))["stages"]
        self.dvc_yaml = yaml.safe_load(read_text(self.root, "dvc.yaml", rev))["stages"]

    def relative(self, path: str | Path) -> str:
        p = Path(path)
        if p.is_absolute():
            p = p.resolve().relative_to(self.root)
        return p.as_posix().rstrip("/")

    def producer(self, path: str) -> str | None:
        for name, entry in self.lock.items():
            for out in entry.get("outs", []):
                if _is_under(path, out["path"]):
                    return name
        return None

    def upstream_of(self, name: str) -> list[str]:
        found = []
        for dep in self.lock[name].get("deps", []):
            producer = self.producer(dep["path"])
            if producer and producer != name and producer not in found:
                found.append(producer)
        return found

    def chain(self, path: str) -> list[str]:
        """Stages behind `path`, raw inputs first, the producing stage last."""
        rel = self.relative(path)
        start = self.producer(rel)
        if start is None:
            raise LookupError(f"{rel} is not an output of any stage in dvc.lock")
        order: list[str] = []

        def visit(stage: str, trail: tuple = ()):
            if stage in order:
                return
            for up in self.upstream_of(stage):
                if up not in trail:
                    visit(up, trail + (stage,))
            order.append(stage)

        visit(start)
        return order

    def _counts(self, name: str) -> dict:
        counts = {}
        for metric in self.dvc_yaml.get(name, {}).get("metrics", []):
            path = next(iter(metric)) if isinstance(metric, dict) else metric
            try:
                data = json.loads(read_text(self.root, path, self.rev))
            except Exception:  # metrics of a past revision may be gone from the cache
                continue
            keep = ("items_in", "items_out", "rejected", "rejected_by_reason", "unit")
            counts[path] = {k: v for k, v in data.items() if k in keep} or data
        return counts

    def record(self, name: str) -> StageRecord:
        entry = self.lock[name]
        return StageRecord(
            name=name,
            cmd=entry.get("cmd", ""),
            params=entry.get("params", {}),
            deps=[{k: d.get(k) for k in ("path", "md5", "size", "nfiles") if k in d} for d in entry.get("deps", [])],
            outs=[{k: o.get(k) for k in ("path", "md5", "size", "nfiles") if k in o} for o in entry.get("outs", [])],
            upstream=self.upstream_of(name),
            counts=self._counts(name),
        )

    def report(self, path: str) -> dict:
        return {
            "artifact": self.relative(path),
            "code": git_commit(self.root, self.rev),
            "stages": [self.record(name).as_dict() for name in self.chain(path)],
        }


def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ignored(path: Path) -> bool:
    """What .dvcignore leaves out of directory hashes."""
    return "__pycache__" in path.parts or path.suffix == ".pyc"


def md5_dir(path: Path) -> str:
    """DVC's directory hash: md5 of the JSON list of (md5, relpath) sorted by relpath, plus '.dir'."""
    entries = [{"md5": md5_file(p), "relpath": p.relative_to(path).as_posix()}
               for p in sorted(path.rglob("*")) if p.is_file() and not _ignored(p)]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def verify(lineage: Lineage, path: str) -> list[dict]:
    """Re-hash every dep and out of the chain on disk; rows that differ from dvc.lock."""
    problems, seen = [], set()
    for name in lineage.chain(path):
        entry = lineage.lock[name]
        for kind in ("deps", "outs"):
            for item in entry.get(kind, []):
                if item["path"] in seen or "md5" not in item:
                    continue
                seen.add(item["path"])
                target = lineage.root / item["path"]
                if not target.exists():
                    actual = None
                else:
                    actual = md5_dir(target) if target.is_dir() else md5_file(target)
                if actual != item["md5"]:
                    problems.append({"stage": name, "kind": kind[:-1], "path": item["path"],
                                     "expected": item["md5"], "actual": actual or "missing"})
    return problems
