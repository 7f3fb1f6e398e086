"""lineage.json for a trained model: its inputs' hashes as dvc.lock records them (plus a
fresh hash of each input file), the params, the code version and package versions."""
from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import yaml

from tasks.common.hashing import sha256_file

PACKAGES = ("torch", "torchvision", "timm", "transformers", "tokenizers", "safetensors", "numpy", "pyarrow",
            "prefect", "dvc", "webdataset")


def _git(repo: Path, *args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=20,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _under(path: str, out: str) -> bool:
    path, out = path.rstrip("/"), out.rstrip("/")
    return path == out or path.startswith(out + "/")


def dvc_lock_records(repo: Path, inputs: list[str]) -> dict[str, dict]:
    """For each input path: the dvc.lock stage whose out holds it, with that out's hash."""
    lock_path = repo / "dvc.lock"
    if not lock_path.is_file():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    found = {}
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            for path in inputs:
                if _under(path, out["path"]):
                    found[path] = {"stage": stage, "out": out["path"], "md5": out.get("md5"),
                                   "size": out.get("size"), "nfiles": out.get("nfiles")}
    return found


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_lineage(repo: str | Path, stage: str, inputs: list[str], params: dict, counts: dict) -> dict:
    repo = Path(repo)
    files = {}
    for path in inputs:
        p = repo / path
        if p.is_file():
            files[path] = {"sha256": sha256_file(p)}
        elif p.is_dir():
            files[path] = {"files": {str(f.relative_to(p)): sha256_file(f) for f in sorted(p.rglob("*")) if f.is_file()}}
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {
        "stage": stage,
        "inputs": {path: {"dvc_lock": dvc_lock_records(repo, inputs).get(path), **files.get(path, {})}
                   for path in inputs},
        "params": params,
        "code": {"git_commit": _git(repo, "rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None},
        "packages": package_versions(),
        "counts": counts,
    }
