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
        tokens = self.visual(volumes)
        b, gd, gh, gw, w = tokens.shape
        grid_mask = F.adaptive_max_pool3d(masks.float().flatten(0, 1).unsqueeze(1), (gd, gh, gw))
        token_mask = grid_mask.view(b, masks.shape[1], -1) > 0
        pooled = self.pool(tokens.view(b, -1, w), token_mask)
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
