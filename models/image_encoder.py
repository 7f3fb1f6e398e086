"""2-D image encoder: a timm Vision Transformer exposing the pooled embedding and patch tokens.

It may start from a local checkpoint (`weights`: .safetensors or a torch state dict) of a timm
ViT or of an open_clip model (its `visual.` tower, native or timm-trunk): timm's own
checkpoint filter renames open_clip's keys and resamples the position embeddings when the
checkpoint's patch grid differs from this config's. The config must describe the
checkpoint's architecture (width, depth, heads, mlp_ratio; pre_norm, act and norm_eps for
CLIP-style towers): any key the model lacks or the checkpoint lacks is an error naming the keys.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

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
    pre_norm: bool = False  # a norm before the blocks and no patch-embedding bias, as CLIP towers have
    act: str = "gelu"  # MLP activation (timm's names: "gelu", "quick_gelu" for OpenAI's CLIP)
    norm_eps: float = 1e-6  # LayerNorm epsilon: timm's ViTs 1e-6, CLIP towers 1e-5
    weights: str | None = None  # local timm or open_clip checkpoint; random init when None
    # patch tokens attend only to patches within this many cells (Chebyshev), not to the class
    # token: each patch token then describes its own neighbourhood, which patch-concept maps
    # need; None: global attention (plain ViT). Needs pool "avg" (the model then has no class token).
    attention_window: int | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "ImageEncoderConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"image config: unknown keys {unknown}; known: {sorted(names)}")
        cfg = cls(**data)
        if cfg.attention_window is not None:
            if isinstance(cfg.attention_window, bool) or not isinstance(cfg.attention_window, int) \
                    or cfg.attention_window < 0:
                raise ValueError(f"image.attention_window: {cfg.attention_window!r} is not a whole number >= 0 "
                                 "(null: global attention)")
            if cfg.pool != "avg":
                raise ValueError(f"image.attention_window needs image.pool 'avg', not {cfg.pool!r}: the class "
                                 "token attends to no patch")
        return cfg


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
            class_token=cfg.attention_window is None,  # local attention: no token would read the class token
            pre_norm=cfg.pre_norm,
            act_layer=cfg.act,
            norm_layer=partial(nn.LayerNorm, eps=cfg.norm_eps),
        )
        self.width = cfg.width
        self.grid = cfg.image_size // cfg.patch_size
        self.register_buffer("attn_mask", self.window_mask(cfg.attention_window), persistent=False)
        if cfg.weights:
            self.load_local_weights(cfg.weights)

    def load_local_weights(self, path: str) -> None:
        from timm.models.vision_transformer import checkpoint_filter_fn

        if not Path(path).is_file():
            raise FileNotFoundError(f"image.weights: no checkpoint at {path}")
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint_filter_fn(state, self.vit)  # open_clip names -> timm's; position grid resampled
        state = {k: v for k, v in state.items() if not k.startswith("head.")}  # a classifier or projection
        try:
            result = self.vit.load_state_dict(state, strict=False)
        except RuntimeError as error:  # a shape differs: another architecture
            raise ValueError(f"image.weights {path} does not fit the image config: {error}") from None
        missing = [k for k in result.missing_keys if not k.startswith("head.")]
        if missing or result.unexpected_keys:
            raise ValueError(f"image.weights {path} does not fit the image config (width, depth, heads, "
                             f"pre_norm): the model's keys missing from it {missing[:6]}, its keys the model "
                             f"lacks {result.unexpected_keys[:6]}")

    def window_mask(self, window: int | None) -> torch.Tensor | None:
        """[P + N, P + N] bool (True: may attend), or None for global attention: a prefix token
        attends everywhere, a patch to the patches within `window` cells of it."""
        if window is None:
            return None
        g, p = self.grid, self.vit.num_prefix_tokens
        rows, cols = torch.div(torch.arange(g * g), g, rounding_mode="floor"), torch.arange(g * g) % g
        near = ((rows[:, None] - rows[None]).abs() <= window) & ((cols[:, None] - cols[None]).abs() <= window)
        mask = torch.zeros(p + g * g, p + g * g, dtype=torch.bool)
        mask[:p] = True
        mask[p:, p:] = near
        return mask

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.vit.forward_features(images, attn_mask=self.attn_mask)  # [B, prefix + N, W], final norm
        pooled = self.vit.forward_head(tokens, pre_logits=True)
        patches = tokens[:, self.vit.num_prefix_tokens :]
        return pooled, patches
