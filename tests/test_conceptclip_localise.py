"""Patch-concept maps that can point: local patch attention (image.attention_window), the
PC-Align patch pools, and a tiny model that learns where a drawn concept lies."""
from __future__ import annotations

import copy

import pytest
import torch

from models import build_model
from models.image_encoder import ImageEncoder, ImageEncoderConfig
from models.losses import patch_concept_scores
from tests.helpers.toy_training import TOY_CFG, toy_collate


def _encoder(window):
    torch.manual_seed(0)
    cfg = ImageEncoderConfig.from_dict({"image_size": 32, "patch_size": 8, "width": 16, "depth": 2, "heads": 2,
                                        "mlp_ratio": 2.0, "pool": "avg", "attention_window": window})
    return ImageEncoder(cfg).eval()


@pytest.mark.parametrize("window,changed", [(0, {0}), (1, {0, 1, 4, 5}), (None, set(range(16)))])
def test_a_patch_token_sees_only_the_patches_within_its_window(window, changed):
    enc = _encoder(window)
    image = torch.randn(1, 3, 32, 32)
    other = image.clone()
    other[:, :, :8, :8] += 3.0  # patch (0, 0) only
    with torch.no_grad():
        a, b = enc(image)[1][0], enc(other)[1][0]
    moved = {i for i in range(16) if not torch.allclose(a[i], b[i], atol=1e-5)}
    assert moved == changed


def test_attention_window_is_checked():
    base = {"image_size": 32, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}
    with pytest.raises(ValueError, match="attention_window needs image.pool 'avg'"):
        ImageEncoderConfig.from_dict({**base, "pool": "token", "attention_window": 1})
    with pytest.raises(ValueError, match="image.attention_window: -1"):
        ImageEncoderConfig.from_dict({**base, "pool": "avg", "attention_window": -1})


def test_patch_pools_on_known_cosines():
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # cosines 1, 0, -1 with the concept
    concept = torch.tensor([[1.0, 0.0]])
    scale, bias = torch.tensor(2.0), torch.tensor(-1.0)
    assert float(patch_concept_scores(patches, concept, scale, bias, "max")) == pytest.approx(1.0)
    assert float(patch_concept_scores(patches, concept, scale, bias, "mean")) == pytest.approx(-1.0)
    lse = float(patch_concept_scores(patches, concept, scale, bias, "lse"))
    assert lse == pytest.approx(float(torch.log(torch.exp(torch.tensor([2.0, 0.0, -2.0])).mean())) - 1.0)
    assert -1.0 < lse < 1.0
    with pytest.raises(ValueError, match="pc_align_pool: 'median'"):
        patch_concept_scores(patches, concept, scale, bias, "median")


def test_conceptclip_config_names_a_wrong_key_or_pool():
    with pytest.raises(ValueError, match=r"unknown keys \['pc_align_pools'\]"):
        build_model({**copy.deepcopy(TOY_CFG), "pc_align_pools": "lse"})
    with pytest.raises(ValueError, match="pc_align_pool: 'top'"):
        build_model({**copy.deepcopy(TOY_CFG), "pc_align_pool": "top"})


class DrawnConcept:
    """32 px images on a 4x4 grid of 8 px patches: a bright square (concept 0, token 5) in a
    random cell of half the images, a dark distractor in another cell of every image; the
    caption is token 5 where the square is drawn, else token 6 (no concept)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    def __len__(self):
        return self.n

    def cells(self, i: int) -> tuple[int, int, bool]:
        g = torch.Generator().manual_seed(self.seed * 10007 + i)
        bright, dark = torch.randperm(16, generator=g)[:2].tolist()
        return bright, dark, i % 2 == 0

    def get(self, i: int, epoch: int) -> dict:
        bright, dark, present = self.cells(i)
        g = torch.Generator().manual_seed(self.seed * 7919 + i * 31 + max(epoch, 0))
        img = 0.3 * torch.randn(3, 32, 32, generator=g)
        for cell, value in ((bright, 2.0), (dark, -2.0)) if present else ((dark, -2.0),):
            y, x = divmod(cell, 4)
            img[:, 8 * y + 1: 8 * y + 7, 8 * x + 1: 8 * x + 7] = value
        # one word, as the prompt is: the text tower is contextual (see the test below)
        ids = torch.zeros(12, dtype=torch.long)
        ids[:3] = torch.tensor([2, 5 if present else 6, 3])
        mask = (torch.arange(12) < 3).long()
        spans = [(1, 2, 0)] if present else []
        return {"image": img, "ids": ids, "mask": mask, "spans": spans}


@pytest.mark.parametrize("concept_bias,points", [(0.0, True), (-10.0, False)])
def test_a_tiny_model_points_at_where_its_concept_is_drawn(concept_bias, points):
    """PC-Align's initial bias decides it: at SigLIP's -10 the negatives' loss starts saturated,
    the positives raise whatever patch every image shares, and the map never finds the square;
    at 0 the negatives push the shared distractor down from the first step."""
    from tasks.training.loop import LoopConfig, train_loop

    cfg = copy.deepcopy(TOY_CFG)
    cfg["image"].update(attention_window=0, depth=2)
    cfg["pc_align_pool"] = "lse"
    cfg["init_concept_logit_bias"] = concept_bias
    torch.manual_seed(0)
    model = build_model(cfg)
    loop = LoopConfig.from_dict({"max_steps": 120, "batch_size": 16, "lr": 3e-3, "warmup_steps": 10,
                                 "eval_every": 120, "device": "cpu", "seed": 0, "threads": 1})
    train_loop(model, DrawnConcept(96, 0), toy_collate, loop, None, "drawn", validation_set=DrawnConcept(16, 1),
               log=lambda _m: None)
    model.eval()
    held = DrawnConcept(40, 2)
    rows = [i for i in range(len(held)) if held.cells(i)[2]]
    images = torch.stack([held.get(i, -1)["image"] for i in rows])
    prompt = torch.tensor([[2, 5, 3]])
    maps = model.patch_concept_map(images, prompt, torch.ones_like(prompt))[:, 0]  # [N, 4, 4]
    hits = [int(m.flatten().argmax()) == held.cells(i)[0] for m, i in zip(maps, rows)]
    assert (sum(hits) / len(hits) >= 0.8) == points, hits
