"""fVLM: anatomy-level CT-report alignment with false-negative-calibrated InfoNCE."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.ct_encoder import CTEncoder, CTEncoderConfig
from models.distributed import gather_cat
from models.losses import fvlm_loss
from models.text_encoder import TextEncoder, TextEncoderConfig


class AnatomyPooling(nn.Module):
    """One learnable query per anatomy cross-attends to the tokens inside that anatomy."""

    def __init__(self, n_anatomies: int, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.queries = nn.Parameter(torch.randn(n_anatomies, width) * 0.02)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, W], token_mask [B, A, N] bool -> [B, A, W]."""
        b, n, w = tokens.shape
        a, h = self.queries.shape[0], self.heads
        d = w // h
        q = self.q(self.queries).view(a, h, d)
        k, v = self.kv(tokens).view(b, n, 2, h, d).unbind(2)
        logits = torch.einsum("ahd,bnhd->bhan", q, k) / d**0.5
        # an anatomy with no token attends everywhere (it is marked absent anyway; avoids NaN)
        mask = token_mask | ~token_mask.any(-1, keepdim=True)
        logits = logits.masked_fill(~mask[:, None], float("-inf"))
        attn = logits.softmax(-1)
        pooled = torch.einsum("bhan,bnhd->bahd", attn, v).reshape(b, a, w)
        return self.norm(self.out(pooled))


def cells_any(masks: torch.Tensor, grid: tuple) -> torch.Tensor:
    """[B, A, D, H, W] bool -> [B, A, n] bool: a grid cell belongs to an anatomy when any
    voxel under it does (fVLM's max-pooled mask)."""
    b, a, *size = masks.shape
    if all(s % g == 0 for s, g in zip(size, grid)):  # block view: no float copy of the masks
        (gd, gh, gw), (pd, ph, pw) = grid, [s // g for s, g in zip(size, grid)]
        return masks.view(b, a, gd, pd, gh, ph, gw, pw).any(7).any(5).any(3).view(b, a, -1)
    return F.adaptive_max_pool3d(masks.flatten(0, 1).unsqueeze(1).float(), grid).view(b, a, -1) > 0


def cells_inside(masks: torch.Tensor, reach: int, stride: int) -> torch.Tensor:
    """[B, A, D, H, W] bool -> [B, A, n] bool on the grid of a stride-`stride` conv stack:
    a cell is inside when every voxel of its `reach`-wide receptive field is (voxels beyond
    the volume's edge count as inside, as zero padding adds nothing)."""
    half = reach // 2
    m = masks
    for dim in (2, 3, 4):
        pad_shape = list(m.shape)
        pad_shape[dim] = half
        pad = torch.ones(pad_shape, dtype=torch.bool, device=m.device)
        m = torch.cat([pad, m, pad], dim).unfold(dim, reach, stride).all(-1)
    return m.flatten(2)


class InteriorPooling(nn.Module):
    """Per anatomy, the max and mean of fine stem features over the cells whose receptive
    field lies wholly inside it, and the log of their count (the organ's size).

    A token at an organ's edge mixes the organ with fat or lung, and that mixture looks like
    a hypodense lesion; interior cells do not. Max is sharp from the first step, where a
    learned attention query needs thousands of steps to become sharp. Only the interior
    cells are gathered, so the cost follows the organs' volume, not the grid's times A.
    """

    def __init__(self, n_anatomies: int, channels: int, width: int):
        super().__init__()
        self.out = nn.Parameter(torch.randn(n_anatomies, 2 * channels + 1, width) * (2 * channels + 1) ** -0.5)
        self.norm = nn.LayerNorm(width)

    def forward(self, fine: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        """fine [B, C, n] features, inside [B, A, n] bool -> [B, A, width]."""
        b, c, n = fine.shape
        a = inside.shape[1]
        bi, ai, ni = inside.nonzero(as_tuple=True)
        rows = fine.transpose(1, 2)[bi, ni]  # [M, C]
        group = bi * a + ai
        index = group[:, None].expand(-1, c)
        # an anatomy with no interior cell keeps zeros
        top = fine.new_zeros(b * a, c).scatter_reduce(0, index, rows, "amax", include_self=False)
        count = torch.bincount(group, minlength=b * a).to(fine.dtype)[:, None]
        mean = fine.new_zeros(b * a, c).index_add(0, group, rows) / count.clamp_min(1)
        stats = torch.cat([top, mean, torch.log1p(count)], 1).view(b, a, -1)
        return self.norm(torch.einsum("bac,acw->baw", stats, self.out))


class FVLM(nn.Module):
    """Batch keys: volumes [B,1,D,H,W]; masks [B,A,D,H,W] bool; usable [B,A] bool (anatomy
    segmented and not cut by the field of view); text_ids/text_mask [U,L] distinct texts, text_rows [M]
    (optional) picking each pair's text, text_index [M] (= b*A + a); normal [B,A]; findings [B,A,F]."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        self.anatomies = list(cfg["anatomies"])
        self.visual = CTEncoder(CTEncoderConfig.from_dict(cfg["ct"]))
        self.text = TextEncoder(TextEncoderConfig.from_dict(cfg["text"]))
        a, w, e = len(self.anatomies), self.visual.width, int(cfg["embed_dim"])
        self.pool = AnatomyPooling(a, w, int(cfg["ct"].get("heads", 4)))
        fine = self.visual.fine_channels  # ct.fine_level: also pool that stem level's interior cells
        self.fine_pool = InteriorPooling(a, fine, w) if fine else None
        self.anatomy_proj = nn.Parameter(torch.randn(a, w, e) * w**-0.5)
        self.anatomy_proj_bias = nn.Parameter(torch.zeros(a, e))
        self.text_proj = nn.Linear(self.text.width, e, bias=False)
        self.temperature = nn.Parameter(torch.tensor(float(cfg.get("init_temperature", 0.07))))
        self.temp_range = tuple(cfg.get("temperature_range", (0.001, 0.5)))
        self.skip_all_normal = bool(cfg.get("skip_all_normal", True))
        self.reduction = str(cfg.get("anatomy_reduction", "mean"))

    def temp(self) -> torch.Tensor:
        return self.temperature.clamp(*self.temp_range)

    def encode_volume(self, volumes: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, A, E] normalised anatomy embeddings and [B, A] presence on the token grid."""
        tokens, fine = self.visual.forward_features(volumes)
        b, gd, gh, gw, w = tokens.shape
        token_mask = cells_any(masks, (gd, gh, gw))
        pooled = self.pool(tokens.view(b, -1, w), token_mask)
        if self.fine_pool is not None:
            # stem level L: cells every 2^(L+1) voxels, each seeing 2^(L+2) - 1 of them
            level = self.visual.cfg.fine_level
            inside = cells_inside(masks, 2 ** (level + 2) - 1, 2 ** (level + 1))
            pooled = pooled + self.fine_pool(fine.flatten(2), inside)
        feats = torch.einsum("baw,awe->bae", pooled, self.anatomy_proj) + self.anatomy_proj_bias
        return F.normalize(feats, dim=-1), token_mask.any(-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.text(input_ids, attention_mask)
        return F.normalize(self.text_proj(pooled), dim=-1)

    def forward(self, batch: dict) -> dict:
        img, present = self.encode_volume(batch["volumes"], batch["masks"])
        b, a, e = img.shape
        txt_rows = self.encode_text(batch["text_ids"], batch["text_mask"])
        if "text_rows" in batch:  # distinct texts encoded once, then spread to their pairs
            txt_rows = txt_rows[batch["text_rows"]]
        txt = img.new_zeros(b * a, e).index_copy(0, batch["text_index"], txt_rows.to(img.dtype)).view(b, a, e)
        has_text = torch.zeros(b * a, dtype=torch.bool, device=img.device)
        has_text[batch["text_index"]] = True
        valid = present & batch["usable"].bool() & has_text.view(b, a)
        loss, per = fvlm_loss(
            gather_cat(img), gather_cat(txt), gather_cat(valid), gather_cat(batch["normal"].bool()),
            gather_cat(batch["findings"].bool()), self.temp(), skip_all_normal=self.skip_all_normal,
            reduction=self.reduction)
        return {"loss": loss, "anatomies_counted": len(per)}

    @torch.no_grad()
    def zero_shot_scores(self, volumes, masks, pos_ids, pos_mask, neg_ids, neg_mask,
                         anatomy_index: torch.Tensor) -> torch.Tensor:
        """[B, T] probability of each positive prompt ("{finding} in the {anatomy}") against its
        negative ("no {finding} in the {anatomy}"), scored on the prompt's anatomy embedding."""
        img, _ = self.encode_volume(volumes, masks)
        pos, neg = self.encode_text(pos_ids, pos_mask), self.encode_text(neg_ids, neg_mask)
        feats = img[:, anatomy_index]  # [B, T, E]
        sp = (feats * pos[None]).sum(-1) / self.temp()
        sn = (feats * neg[None]).sum(-1) / self.temp()
        return torch.stack([sn, sp], -1).softmax(-1)[..., 1]
