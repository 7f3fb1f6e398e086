"""Synthetic ConceptCLIP data and model for loop tests, DDP checks and benchmarks (no I/O)."""
from __future__ import annotations

import json
import os

import torch

TOY_CFG = {
    "model": "conceptclip", "embed_dim": 16, "concept_hidden": 16, "pc_align_weight": 0.5,
    "image": {"image_size": 32, "patch_size": 8, "width": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0, "pool": "avg"},
    "text": {"vocab_size": 40, "width": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0, "context_length": 12},
}


class ToyConceptData:
    """Sample i: a class-coloured noisy image and a caption of token ids naming its class;
    one concept span per caption. Augmentation noise is seeded per (seed, epoch, i)."""

    def __init__(self, n: int = 48, n_classes: int = 6, seed: int = 0, image_size: int = 32, context: int = 12):
        self.n, self.k, self.seed, self.size, self.context = n, n_classes, seed, image_size, context

    def __len__(self):
        return self.n

    def get(self, i: int, epoch: int) -> dict:
        c = i % self.k
        g = torch.Generator().manual_seed(self.seed * 7919 + i)
        img = torch.randn(3, self.size, self.size, generator=g) * 0.3
        img[c % 3] += 1.0 + 0.2 * (c // 3)
        if epoch >= 0:
            ga = torch.Generator().manual_seed(hash((self.seed, epoch, i)) & 0x7FFFFFFF)
            img = img + 0.1 * torch.randn(img.shape, generator=ga)
        ids = torch.zeros(self.context, dtype=torch.long)
        words = [5 + c, 20 + (i % 3), 30 + c]
        ids[0], ids[1 : 1 + len(words)], ids[1 + len(words)] = 2, torch.tensor(words), 3
        mask = (torch.arange(self.context) < len(words) + 2).long()
        return {"image": img, "ids": ids, "mask": mask, "spans": [(1, 2, c), (3, 4, self.k + c)]}


def toy_collate(samples: list[dict]) -> dict:
    rows, starts, ends, cids = [], [], [], []
    for r, s in enumerate(samples):
        for a, b, cid in s["spans"]:
            rows.append(r); starts.append(a); ends.append(b); cids.append(cid)
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "input_ids": torch.stack([s["ids"] for s in samples]),
        "attention_mask": torch.stack([s["mask"] for s in samples]),
        "concept_row": torch.tensor(rows), "concept_start": torch.tensor(starts),
        "concept_end": torch.tensor(ends), "concept_id": torch.tensor(cids),
    }


def toy_model(seed: int = 0):
    from models import build_model

    torch.manual_seed(seed)
    return build_model(json.loads(json.dumps(TOY_CFG)))


def run_toy(loop_cfg: dict, checkpoint_dir: str | None, kill_at_step: int | None = None, seed: int = 0,
            fingerprint: str = "toy"):
    from tasks.training.loop import LoopConfig, train_loop

    cfg = LoopConfig.from_dict(loop_cfg)
    model = toy_model(seed)
    return train_loop(model, ToyConceptData(seed=seed), toy_collate, cfg, checkpoint_dir, fingerprint,
                      validation_set=ToyConceptData(n=12, seed=seed + 1), kill_at_step=kill_at_step,
                      log=lambda _m: None)


def ddp_worker(rank: int, world: int, init_file: str, loop_cfg: dict, out_path: str) -> None:
    """One gloo rank of a toy DDP run; rank 0 writes the curve and final weights."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = run_toy(loop_cfg, None)
        if rank == 0:
            torch.save({"curve": result.curve, "model": result.model.state_dict()}, out_path)
    finally:
        dist.destroy_process_group()


def kill_worker(loop_cfg: dict, checkpoint_dir: str, kill_at_step: int) -> None:
    torch.set_num_threads(1)
    run_toy(loop_cfg, checkpoint_dir, kill_at_step=kill_at_step)
    os._exit(3)  # not reached: the run kills itself
