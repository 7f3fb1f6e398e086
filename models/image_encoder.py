"""2-D image encoder: a timm Vision Transformer exposing the pooled embedding and patch tokens."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn


@dataclass
class ImageEncoderConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    pool: str = "token"  # "token" (CLS) or "avg"
    weights: str | None = None  # local timm/safetensors state dict; random init when None

    @classmethod
    def from_dict(cls, data: dict) -> "ImageEncoderConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class ImageEncoder(nn.Module):
    """forward(images) -> (pooled [B, W], patch tokens [B, N, W])."""

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.cfg = cfg
        self.vit = VisionTransformer(
            img_size=cfg.image_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.width,
            depth=cfg.depth,
            num_heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            drop_path_rate=cfg.drop_path,
            num_classes=0,
            global_pool=cfg.pool,
            class_token=True,
        )
        self.width = cfg.width
        self.grid = cfg.image_size // cfg.patch_size
        if cfg.weights:
            self.load_local_weights(cfg.weights)

    def load_local_weights(self, path: str) -> None:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        self.vit.load_state_dict(state, strict=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.vit.forward_features(images)  # [B, prefix + N, W], final norm applied
        pooled = self.vit.forward_head(tokens, pre_logits=True)
        patches = tokens[:, self.vit.num_prefix_tokens :]
        return pooled, patches
