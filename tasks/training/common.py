"""Params resolution (presets), fingerprints and the DDP launcher shared by the two
training stages."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tasks.common.hashing import sha256_file
from tasks.common.params import section

REPO = Path(__file__).resolve().parent.parent.parent
# the code a checkpoint was trained by: a resumed run must not pick up weights that other
# code (same params, same data) wrote
CODE_DIRS = (REPO / "models", REPO / "tasks" / "training", REPO / "tasks" / "common")


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def resolve(params: dict, stage: str, repo: Path) -> tuple[dict, dict]:
    """(stage section with its preset applied, model config) for a training stage."""
    from tasks.schema import resolve_training_preset

    resolved = resolve_training_preset(section(params, stage))
    cfg_path = Path(resolved["model_config"])
    cfg_path = cfg_path if cfg_path.is_absolute() else repo / cfg_path
    model_cfg = deep_merge(json.loads(cfg_path.read_text()), resolved["model"])
    return resolved, model_cfg


def fingerprint(*parts, files: list[Path] = (), code_dirs: tuple = CODE_DIRS) -> str:
    """Identity of a run: its settings, the bytes of its input tables and of the training code."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for f in files:
        if Path(f).is_file():
            h.update(sha256_file(f).encode())
    for folder in code_dirs:
        for source in sorted(Path(folder).rglob("*.py")):
            h.update(str(source.relative_to(folder)).encode())
            h.update(sha256_file(source).encode())
    return h.hexdigest()


def rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed() -> bool:
    """Join the torchrun process group when launched by torchrun."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return True


def launch_torchrun(stage: str, params: dict, nproc: int) -> int:
    """Run the stage's rank entry point under torchrun with these params (a temp JSON)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(params, handle)
        spec = handle.name
    try:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "tasks.training.rank_main", stage, spec]
        return subprocess.run(cmd, check=True).returncode
    finally:
        os.unlink(spec)
