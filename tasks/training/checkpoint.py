"""Training checkpoints: written atomically, the latest resumed, loaded with weights_only=True.

A checkpoint carries a fingerprint of the run's config and data; a checkpoint from a
run with other params is never resumed (DVC keeps the folder between runs).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def checkpoint_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"ckpt-{step:08d}.pt"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        m = _NAME.match(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def save_checkpoint(folder: str | Path, step: int, state: dict, keep: int = 2) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact
    for _, old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_latest(folder: str | Path, fingerprint: str) -> dict | None:
    """The newest readable checkpoint with this fingerprint, else None."""
    for _, path in reversed(list_checkpoints(folder)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated file from a kill: try the one before
            continue
        if state.get("fingerprint") == fingerprint:
            return state
    return None


def clear_checkpoints(folder: str | Path) -> None:
    for _, path in list_checkpoints(folder):
        path.unlink(missing_ok=True)
