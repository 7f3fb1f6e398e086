"""ConceptCLIP: IT-Align (SigLIP) + PC-Align (patch-concept sigmoid alignment)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.distributed import gather_cat, gather_variable, world
from models.image_encoder import ImageEncoder, ImageEncoderConfig
from models.losses import PATCH_POOLS, concept_positives, pc_align_loss, patch_concept_scores, siglip_loss
from models.text_encoder import TextEncoder, TextEncoderConfig


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


def span_means(tokens: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Mean of tokens[row, start:end] for each span, via prefix sums (no Python loop)."""
    b, l, w = tokens.shape
    cs = torch.cat([tokens.new_zeros(b, 1, w), tokens.float().cumsum(1)], 1)  # [B, L+1, W]
    total = cs[rows, ends] - cs[rows, starts]
    return (total / (ends - starts).clamp_min(1).unsqueeze(-1).float()).to(tokens.dtype)


CONFIG_KEYS = ("model", "embed_dim", "concept_hidden", "pc_align_weight", "pc_align_pool", "init_logit_scale",
               "init_logit_bias", "init_concept_logit_bias", "max_logit_scale", "image", "text")


class ConceptCLIP(nn.Module):
    """Batch keys: images [B,3,H,W], input_ids/attention_mask [B,L]; concept_row/start/end/id [C]
    (token span of each concept mention in its caption; id = integer concept id)."""

    def __init__(self, cfg: dict):
        super().__init__()
        unknown = sorted(set(cfg) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"conceptclip config: unknown keys {unknown}; known: {sorted(CONFIG_KEYS)}")
        # how PC-Align pools an image's patch logits (models/losses.py: patch_concept_scores)
        self.pc_pool = cfg.get("pc_align_pool", "max")
        if self.pc_pool not in PATCH_POOLS:
            raise ValueError(f"conceptclip config pc_align_pool: {self.pc_pool!r} is not one of {list(PATCH_POOLS)}")
        self.cfg = cfg
        self.visual = ImageEncoder(ImageEncoderConfig.from_dict(cfg["image"]))
        self.text = TextEncoder(TextEncoderConfig.from_dict(cfg["text"]))
        e = int(cfg["embed_dim"])
        hid = int(cfg.get("concept_hidden", e))
        self.image_proj = nn.Linear(self.visual.width, e, bias=False)
        self.text_proj = nn.Linear(self.text.width, e, bias=False)
        self.patch_mlp = mlp(self.visual.width, hid, e)
        self.concept_mlp = mlp(self.text.width, hid, e)
        t0, b0 = math.log(cfg.get("init_logit_scale", 10.0)), float(cfg.get("init_logit_bias", -10.0))
        self.logit_scale = nn.Parameter(torch.tensor(t0))
        self.logit_bias = nn.Parameter(torch.tensor(b0))
        self.concept_logit_scale = nn.Parameter(torch.tensor(t0))
        # PC-Align's own bias: SigLIP's -10 suits IT-Align's B x B pairs, but it leaves PC-Align's
        # negatives without a gradient at first, and the positives then raise the patches every
        # image shares (anatomy) instead of the finding's
        self.concept_logit_bias = nn.Parameter(torch.tensor(float(cfg.get("init_concept_logit_bias", b0))))
        self.pc_weight = float(cfg.get("pc_align_weight", 0.5))
        self.max_logit_scale = math.log(cfg.get("max_logit_scale", 100.0))

    # -- encoders -------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, patches: bool = True):
        pooled, tokens = self.visual(images)
        glob = F.normalize(self.image_proj(pooled), dim=-1)
        if not patches:
            return glob, None
        return glob, F.normalize(self.patch_mlp(tokens), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        pooled, tokens = self.text(input_ids, attention_mask)
        return F.normalize(self.text_proj(pooled), dim=-1), tokens

    def concept_embeddings(self, tokens, rows, starts, ends) -> torch.Tensor:
        return F.normalize(self.concept_mlp(span_means(tokens, rows, starts, ends)), dim=-1)

    def prompt_concepts(self, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Global text embedding and a concept embedding from all of a prompt's word tokens."""
        glob, tokens = self.encode_text(input_ids, attention_mask)
        ends = attention_mask.sum(1) - 1  # drop [CLS] and [SEP]
        rows = torch.arange(len(ends), device=ends.device)
        starts = torch.ones_like(ends)
        return glob, self.concept_embeddings(tokens, rows, starts, ends.clamp_min(2))

    def scales(self):
        return (self.logit_scale.clamp(max=self.max_logit_scale).exp(),
                self.concept_logit_scale.clamp(max=self.max_logit_scale).exp())

    # -- training -------------------------------------------------------------------------
    def forward(self, batch: dict, pc_align: bool = True) -> dict:
        img, patches = self.encode_image(batch["images"], patches=pc_align and self.pc_weight > 0)
        txt, tokens = self.encode_text(batch["input_ids"], batch["attention_mask"])
        scale, cscale = self.scales()
        rank, _ = world()
        b_local = img.shape[0]
        img_all, txt_all = gather_cat(img), gather_cat(txt)
        it = siglip_loss(img_all, txt_all, scale, self.logit_bias)
        out = {"it_loss": it}
        loss = it
        if patches is not None:
            concepts = self.concept_embeddings(tokens, batch["concept_row"], batch["concept_start"],
                                               batch["concept_end"])
            concepts_all, _ = gather_variable(concepts)
            rows_all, _ = gather_variable(batch["concept_row"] + rank * b_local)
            ids_all, _ = gather_variable(batch["concept_id"])
            patches_all = gather_cat(patches)
            pos = concept_positives(rows_all, ids_all, patches_all.shape[0])
            pc = pc_align_loss(patches_all, concepts_all, pos, cscale, self.concept_logit_bias, self.pc_pool)
            out["pc_loss"] = pc
            loss = loss + self.pc_weight * pc
        out["loss"] = loss
        return out

    # -- zero-shot ------------------------------------------------------------------------
    @torch.no_grad()
    def zero_shot_parts(self, images, prompt_ids, prompt_mask, top_k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """([B, T] global image-prompt cosines, [B, T] means of the top-k patch-prompt cosines),
        from one image encoding: a patch weight w scores (1 - w) * global + w * local."""
        img, patches = self.encode_image(images)
        glob, concept = self.prompt_concepts(prompt_ids, prompt_mask)
        cos = torch.einsum("bpd,td->bpt", patches, concept)
        local = cos.topk(min(top_k, cos.shape[1]), dim=1).values.mean(1)
        return img @ glob.t(), local

    @torch.no_grad()
    def zero_shot_scores(self, images, prompt_ids, prompt_mask, patch_weight: float = 0.0,
                         top_k: int = 5) -> torch.Tensor:
        """[B, T] image-prompt scores: global cosine, mixed with the mean of the top-k
        patch-prompt cosines when patch_weight > 0."""
        if patch_weight <= 0:
            img, _ = self.encode_image(images, patches=False)
            glob, _ = self.prompt_concepts(prompt_ids, prompt_mask)
            return img @ glob.t()
        score, local = self.zero_shot_parts(images, prompt_ids, prompt_mask, top_k)
        return (1 - patch_weight) * score + patch_weight * local

    @torch.no_grad()
    def patch_concept_map(self, images, prompt_ids, prompt_mask) -> torch.Tensor:
        """[B, T, gh, gw] patch-concept cosine maps (explainability overlays)."""
        _, patches = self.encode_image(images)
        _, concept = self.prompt_concepts(prompt_ids, prompt_mask)
        cos = torch.einsum("bpd,td->btp", patches, concept)
        g = self.visual.grid
        return cos.reshape(cos.shape[0], cos.shape[1], g, g)

    @torch.no_grad()
    def concept_patch_scores(self, images, prompt_ids, prompt_mask) -> torch.Tensor:
        """[B, T] PC-Align scores (patches pooled as in training, with the learned scale and bias)."""
        _, patches = self.encode_image(images)
        _, concept = self.prompt_concepts(prompt_ids, prompt_mask)
        _, cscale = self.scales()
        return patch_concept_scores(patches, concept, cscale, self.concept_logit_bias, self.pc_pool)
