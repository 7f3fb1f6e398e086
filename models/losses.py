"""Losses of ConceptCLIP (SigLIP IT-Align, PC-Align) and fVLM (soft-target InfoNCE with
false-negative calibration). Inputs are L2-normalised embeddings; scales are already
exponentiated (the models own the learnable parameters)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sigmoid_pair_loss(logits: torch.Tensor, positive: torch.Tensor, n_norm: int) -> torch.Tensor:
    """-log sigmoid(z * logit) summed over all pairs, z = +1 positive, -1 otherwise; divided by n_norm."""
    z = positive.to(logits.dtype) * 2.0 - 1.0
    return -F.logsigmoid(z * logits).sum() / n_norm


def siglip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor) -> torch.Tensor:
    """SigLIP: matched pairs (the diagonal) positive, every other pair negative; per image."""
    logits = logit_scale * image @ text.t() + logit_bias
    eye = torch.eye(image.shape[0], text.shape[0], device=image.device, dtype=torch.bool)
    return sigmoid_pair_loss(logits, eye, image.shape[0])


def concept_positives(concept_row: torch.Tensor, concept_id: torch.Tensor, n_images: int) -> torch.Tensor:
    """[B, C] bool: concept c is positive for image b when b's caption has a concept with c's id.

    Without this, the same CUI named in two captions would be a negative of the other image.
    """
    owner = F.one_hot(concept_row, n_images).t().float()  # [B, C]
    same = (concept_id[:, None] == concept_id[None, :]).float()  # [C, C]
    return (owner @ same) > 0


PATCH_POOLS = ("max", "lse", "mean")


def patch_concept_scores(patches: torch.Tensor, concepts: torch.Tensor, scale: torch.Tensor,
                         bias: torch.Tensor, pool: str = "max") -> torch.Tensor:
    """[B, C]: an image's patch logits scale * cos(patch, concept) pooled over its patches, + bias.

    max: the best patch (scale > 0, so max commutes with the affine map); lse: log-mean-exp,
    a smooth max whose gradient reaches every patch in proportion to its softmax weight;
    mean: every patch alike."""
    cos = torch.einsum("bpd,cd->bpc", patches, concepts)
    if pool == "max":
        return scale * cos.amax(dim=1) + bias
    if pool == "lse":
        return torch.logsumexp(scale * cos, dim=1) - math.log(cos.shape[1]) + bias
    if pool == "mean":
        return scale * cos.mean(dim=1) + bias
    raise ValueError(f"pc_align_pool: {pool!r} is not one of {list(PATCH_POOLS)}")


def pc_align_loss(patches: torch.Tensor, concepts: torch.Tensor, positive: torch.Tensor,
                  scale: torch.Tensor, bias: torch.Tensor, pool: str = "max") -> torch.Tensor:
    """Sigmoid loss of every (image, concept) pair in the batch, averaged over concepts."""
    if concepts.shape[0] == 0:
        return patches.sum() * 0.0 + scale * 0.0 + bias * 0.0
    scores = patch_concept_scores(patches, concepts, scale, bias, pool)
    return sigmoid_pair_loss(scores, positive, concepts.shape[0])


def false_negative_targets(normal: torch.Tensor, findings: torch.Tensor, normal_pairs: bool = True,
                           disease_aware: bool = True) -> torch.Tensor:
    """[N, N] 0/1 targets: the diagonal; both descriptions normal; both abnormal with the same
    non-empty set of present findings (findings: [N, F] multi-hot)."""
    n = normal.shape[0]
    normal = normal.bool()
    findings = findings.bool()
    t = torch.eye(n, dtype=torch.bool, device=normal.device)
    if normal_pairs:
        t |= normal[:, None] & normal[None, :]
    if disease_aware:
        abnormal = ~normal & findings.any(-1)
        same = (findings[:, None, :] == findings[None, :, :]).all(-1)
        t |= abnormal[:, None] & abnormal[None, :] & same
    return t.float()


def soft_infonce(image: torch.Tensor, text: torch.Tensor, targets: torch.Tensor,
                 temperature: torch.Tensor) -> torch.Tensor:
    """InfoNCE in both directions against row-normalised soft targets."""
    logits = image @ text.t() / temperature
    row = targets / targets.sum(1, keepdim=True)
    col = targets.t() / targets.t().sum(1, keepdim=True)
    i2t = -(row * F.log_softmax(logits, 1)).sum(1).mean()
    t2i = -(col * F.log_softmax(logits.t(), 1)).sum(1).mean()
    return 0.5 * (i2t + t2i)


def fvlm_loss(image: torch.Tensor, text: torch.Tensor, valid: torch.Tensor, normal: torch.Tensor,
              findings: torch.Tensor, temperature: torch.Tensor, skip_all_normal: bool = True,
              reduction: str = "mean", normal_pairs: bool = True,
              disease_aware: bool = True) -> tuple[torch.Tensor, dict[int, float]]:
    """One soft-target InfoNCE per anatomy over the batch rows where it is valid.

    image, text: [B, A, E]; valid, normal: [B, A]; findings: [B, A, F].
    Returns the reduced loss and {anatomy index: loss} of the anatomies counted.
    """
    per = {}
    losses = []
    for a in range(image.shape[1]):
        rows = valid[:, a].bool()
        if int(rows.sum()) < 2:
            continue
        nrm = normal[rows, a].bool()
        if skip_all_normal and bool(nrm.all()):
            continue
        t = false_negative_targets(nrm, findings[rows, a], normal_pairs, disease_aware)
        loss = soft_infonce(image[rows, a], text[rows, a], t, temperature)
        losses.append(loss)
        per[a] = float(loss.detach())
    if not losses:
        # keeps every parameter in the graph (DDP expects gradients, here zeros)
        return image.sum() * 0.0 + text.sum() * 0.0 + temperature * 0.0, per
    stacked = torch.stack(losses)
    return (stacked.sum() if reduction == "sum" else stacked.mean()), per
