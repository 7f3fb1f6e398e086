"""Losses against open_clip's reference implementations and on hand-built batches."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import (concept_positives, false_negative_targets, fvlm_loss, pc_align_loss,
                           siglip_loss, soft_infonce)

open_clip_loss = pytest.importorskip("open_clip.loss")


def _feats(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1),
            F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1))


@pytest.mark.parametrize("n,scale,bias", [(8, 10.0, -10.0), (32, 3.7, 1.5), (5, 100.0, -3.0)])
def test_siglip_equals_open_clip(n, scale, bias):
    img, txt = _feats(n, 24, n)
    scale_t, bias_t = torch.tensor(scale, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64)
    ours = siglip_loss(img, txt, scale_t, bias_t)
    ref = open_clip_loss.SigLipLoss()(img, txt, scale_t, bias_t)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5, rel=1e-5)


@pytest.mark.parametrize("n,temp", [(8, 0.07), (16, 0.5), (3, 0.01)])
def test_soft_infonce_identity_equals_clip_loss(n, temp):
    img, txt = _feats(n, 16, 100 + n)
    t = torch.tensor(temp, dtype=torch.float64)
    ours = soft_infonce(img, txt, torch.eye(n, dtype=torch.float64), t)
    ref = open_clip_loss.ClipLoss()(img, txt, 1.0 / t)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5, rel=1e-5)
    # and the full per-anatomy loss with only distinct abnormal findings reduces to it too
    findings = torch.eye(n, dtype=torch.bool)[:, None, :]
    loss, per = fvlm_loss(img[:, None], txt[:, None], torch.ones(n, 1, dtype=torch.bool),
                          torch.zeros(n, 1, dtype=torch.bool), findings, t)
    assert list(per) == [0]
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5, rel=1e-5)


def test_false_negative_targets_hand_built():
    # rows: 0 normal, 1 normal, 2 {A}, 3 {A}, 4 {A,B}, 5 {B}, 6 abnormal without named findings
    normal = torch.tensor([1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)
    findings = torch.tensor([[0, 0], [0, 0], [1, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=torch.bool)
    expected = torch.eye(7)
    expected[0, 1] = expected[1, 0] = 1  # normal / normal
    expected[2, 3] = expected[3, 2] = 1  # equal finding sets
    t = false_negative_targets(normal, findings)
    assert torch.equal(t, expected)
    # switches turn each rule off
    assert torch.equal(false_negative_targets(normal, findings, normal_pairs=False)[0, 1], torch.tensor(0.0))
    assert torch.equal(false_negative_targets(normal, findings, disease_aware=False)[2, 3], torch.tensor(0.0))


def test_soft_targets_change_the_loss_and_rows_are_normalised():
    img, txt = _feats(4, 8, 7)
    t = torch.tensor(0.1, dtype=torch.float64)
    targets = torch.eye(4, dtype=torch.float64)
    targets[0, 1] = targets[1, 0] = 1
    soft = soft_infonce(img, txt, targets, t)
    # by hand: row 0 and 1 targets are 0.5/0.5
    logits = img @ txt.t() / t
    lp, lpt = F.log_softmax(logits, 1), F.log_softmax(logits.t(), 1)
    def one(lp_):
        rows = [-(0.5 * lp_[0, 0] + 0.5 * lp_[0, 1]), -(0.5 * lp_[1, 0] + 0.5 * lp_[1, 1]), -lp_[2, 2], -lp_[3, 3]]
        return torch.stack(rows).mean()
    assert soft.item() == pytest.approx(0.5 * (one(lp) + one(lpt)).item(), abs=1e-9)


def test_fvlm_skips_all_normal_and_single_rows():
    img, txt = _feats(6, 8, 3)
    img, txt = img.view(3, 2, 8), txt.view(3, 2, 8)
    valid = torch.tensor([[1, 1], [1, 0], [1, 0]], dtype=torch.bool)  # anatomy 1 has one row
    normal = torch.tensor([[1, 0], [1, 1], [1, 1]], dtype=torch.bool)  # anatomy 0 all normal
    findings = torch.zeros(3, 2, 1, dtype=torch.bool)
    t = torch.tensor(0.07, dtype=torch.float64)
    loss, per = fvlm_loss(img, txt, valid, normal, findings, t, skip_all_normal=True)
    assert per == {} and loss.item() == 0.0
    loss, per = fvlm_loss(img, txt, valid, normal, findings, t, skip_all_normal=False)
    assert list(per) == [0] and loss.item() > 0


def test_concept_positives_share_ids_across_captions():
    rows = torch.tensor([0, 0, 1, 2])
    ids = torch.tensor([5, 7, 5, 9])
    pos = concept_positives(rows, ids, 3)
    expected = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(pos, expected)


def test_pc_align_loss_by_hand():
    g = torch.Generator().manual_seed(0)
    patches = F.normalize(torch.randn(2, 3, 4, generator=g, dtype=torch.float64), dim=-1)
    concepts = F.normalize(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=-1)
    pos = torch.tensor([[1, 0, 0], [0, 1, 1]], dtype=torch.bool)
    scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    total = 0.0
    for b in range(2):
        for c in range(3):
            s = max(float(scale * (patches[b, p] @ concepts[c]) + bias) for p in range(3))
            z = 1.0 if pos[b, c] else -1.0
            total += math.log1p(math.exp(-z * s))
    assert pc_align_loss(patches, concepts, pos, scale, bias).item() == pytest.approx(total / 3, rel=1e-9)
