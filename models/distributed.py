"""Gathering features across DDP ranks with gradients, so batch-wide contrastive losses
see the global batch (a no-op without an initialised process group)."""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.distributed as dist

_gather = True


@contextmanager
def no_gather():
    """Local-only losses inside (held-out evaluation that every rank runs on its own)."""
    global _gather
    previous, _gather = _gather, False
    try:
        yield
    finally:
        _gather = previous


def world() -> tuple[int, int]:
    if _gather and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    # backward sums every rank's gradient for this rank's slice; all_reduce works on gloo
    # too (reduce_scatter does not).
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        ctx.rank, ctx.n = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x (same shape on every rank) over ranks along dim 0, with gradients."""
    if world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_variable(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Like gather_cat for a dim 0 that differs between ranks; returns the sizes too."""
    rank, size = world()
    if size == 1:
        return x, [x.shape[0]]
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    pad = max(sizes) - x.shape[0]
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))], 0)
    full = _GatherWithGrad.apply(x)
    m = max(sizes)
    return torch.cat([full[r * m : r * m + s] for r, s in enumerate(sizes)], 0), sizes
