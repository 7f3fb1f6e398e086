"""The training loop both models share: deterministic batch plan, AdamW + warmup/cosine,
clipping, accumulation, bf16 autocast on CUDA, checkpoint/resume, DDP.

Determinism: the samples of global step s depend only on (seed, s); augmentation is
seeded per (seed, epoch, sample); RNG, optimiser and scheduler states are checkpointed.
So a killed and resumed run ends with the same weights as an uninterrupted one, and
N ranks with batch B/N see the same global batch as one rank with B.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from models.distributed import no_gather
from tasks.training.checkpoint import clear_checkpoints, load_latest, save_checkpoint
from tasks.training.optim import build_optimizer, build_scheduler


@dataclass
class LoopConfig:
    max_steps: int = 100
    batch_size: int = 32  # global, over ranks and accumulation
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 10
    min_lr_ratio: float = 0.0
    betas: tuple = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 1.0
    grad_accum: int = 1
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    eval_every: int = 25
    num_workers: int = 0
    precision: str = "bf16"  # autocast dtype on CUDA; CPU runs in fp32
    device: str = "auto"
    threads: int = 0  # torch intra-op threads; 0 = torch's default

    @classmethod
    def from_dict(cls, data: dict) -> "LoopConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class LoopResult:
    model: nn.Module
    curve: list[dict]
    steps: int
    resumed_from: int
    seconds: float
    samples_seen: int
    extra: dict = field(default_factory=dict)


class _Items(torch.utils.data.Dataset):
    """Map-style view over (index, epoch) keys so augmentation can be seeded per epoch."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, epoch = key
        return self.dataset.get(index, epoch)


def step_indices(step: int, n: int, batch: int, seed: int) -> tuple[list[int], int]:
    """Sample indices of 0-based global step `step`, and its epoch."""
    per_epoch = max(1, n // batch)
    epoch, k = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return perm[k * batch : (k + 1) * batch], epoch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def evaluate_loss(model: nn.Module, dataset, collate: Callable, batch_size: int, device, autocast) -> float:
    """Mean loss over the held-out set in fixed batches (no augmentation, no gathering)."""
    if dataset is None or len(dataset) < 2:
        return float("nan")
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    idx = list(range(len(dataset)))
    chunks = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        chunks[-2].extend(chunks.pop())
    with torch.no_grad(), no_gather(), autocast():
        for chunk in chunks:
            batch = to_device(collate([dataset.get(i, -1) for i in chunk]), device)
            total += float(model(batch)["loss"]) * len(chunk)
            count += len(chunk)
    model.train(was_training)
    return total / max(count, 1)


def train_loop(model: nn.Module, train_set, collate: Callable, cfg: LoopConfig, checkpoint_dir,
               fingerprint: str, validation_set=None, kill_at_step: int | None = None,
               log: Callable[[str], Any] = print) -> LoopResult:
    """Train to cfg.max_steps, resuming from the newest matching checkpoint in checkpoint_dir.

    Datasets expose __len__ and get(index, epoch) (epoch -1: no augmentation).
    """
    rank, world = _dist()
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    n = len(train_set)
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(f"batch_size {cfg.batch_size} not divisible by ranks x grad_accum ({world}x{cfg.grad_accum})")
    if n < cfg.batch_size:
        raise ValueError(f"{n} training samples < batch_size {cfg.batch_size}")
    local = cfg.batch_size // world
    micro = local // cfg.grad_accum

    model.to(device)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
    scheduler = build_scheduler(optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    start, curve, window = 0, [], []
    state = load_latest(checkpoint_dir, fingerprint) if checkpoint_dir else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, curve, window = int(state["step"]), list(state["curve"]), list(state["window"])
        log(f"resumed from step {start}")
    elif checkpoint_dir and rank == 0:
        clear_checkpoints(checkpoint_dir)  # stale checkpoints of other params

    use_amp = device.type == "cuda" and cfg.precision in ("bf16", "fp16")
    amp_dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16

    def autocast():
        return torch.autocast("cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # one DataLoader over all remaining micro-batches of this rank
    plan, epochs = [], []
    for step in range(start, cfg.max_steps):
        idx, epoch = step_indices(step, n, cfg.batch_size, cfg.seed)
        mine = idx[rank * local : (rank + 1) * local]
        for m in range(cfg.grad_accum):
            plan.append([(i, epoch) for i in mine[m * micro : (m + 1) * micro]])
        epochs.append(epoch)
    loader = torch.utils.data.DataLoader(
        _Items(train_set), batch_sampler=plan, collate_fn=collate, num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", persistent_workers=False)

    def record(step: int, train_loss: float) -> None:
        val = evaluate_loss(model, validation_set, collate, cfg.batch_size, device, autocast)
        row = {"step": step, "epoch": step_indices(max(step - 1, 0), n, cfg.batch_size, cfg.seed)[1],
               "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss, "validation_loss": val}
        curve.append(row)
        if rank == 0:
            log(f"step {step}/{cfg.max_steps}  train {train_loss:.4f}  validation {val:.4f}  lr {row['lr']:.2e}")

    started = time.monotonic()
    model.train()
    initial_validation = None
    if start == 0:
        initial_validation = evaluate_loss(model, validation_set, collate, cfg.batch_size, device, autocast)
    batches = iter(loader)
    for step in range(start, cfg.max_steps):
        step_loss = 0.0
        for m in range(cfg.grad_accum):
            batch = to_device(next(batches), device)
            sync = contextlib.nullcontext() if (world == 1 or m == cfg.grad_accum - 1) else net.no_sync()
            with sync:
                with autocast():
                    out = net(batch)
                (out["loss"] / cfg.grad_accum).backward()
            step_loss += float(out["loss"].detach()) / cfg.grad_accum
        if cfg.grad_clip and cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(step_loss):
            raise FloatingPointError(f"loss is {step_loss} at step {step + 1}")
        done = step + 1
        if step == 0 and initial_validation is not None:
            curve.append({"step": 0, "epoch": 0, "lr": 0.0, "train_loss": step_loss,
                          "validation_loss": initial_validation})
        window.append(step_loss)
        if done % cfg.eval_every == 0 or done == cfg.max_steps:
            record(done, sum(window) / len(window))
            window = []
        if checkpoint_dir and (done % cfg.checkpoint_every == 0 or done == cfg.max_steps):
            if rank == 0:
                save_checkpoint(checkpoint_dir, done, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "step": done,
                    "curve": curve, "window": window, "fingerprint": fingerprint,
                }, keep=cfg.keep_checkpoints)
            if world > 1:
                dist.barrier()
        if kill_at_step is not None and done == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # tests: a hard kill, no cleanup
    seconds = time.monotonic() - started
    return LoopResult(model=model, curve=curve, steps=cfg.max_steps, resumed_from=start, seconds=seconds,
                      samples_seen=(cfg.max_steps - start) * cfg.batch_size)


def train_prepared(prep, collate: Callable, checkpoint_dir: Path | None, kill_at_step: int | None = None,
                   log=print) -> LoopResult:
    """Build the model a stage prepared (cfg, model_cfg, train, validation, fingerprint) and train it."""
    from models import build_model

    loop = LoopConfig.from_dict(prep.cfg)
    torch.manual_seed(loop.seed)
    model = build_model(prep.model_cfg)
    return train_loop(model, prep.train, collate, loop, checkpoint_dir, prep.fingerprint, validation_set=prep.validation,
                      kill_at_step=kill_at_step, log=log)
