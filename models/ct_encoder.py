"""3-D Vision Transformer over CT volumes (D, H, W), exposing tokens on their 3-D grid."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn


@dataclass
class CTEncoderConfig:
    volume_size: tuple = (32, 64, 64)  # D, H, W after resampling
    patch_size: tuple = (8, 16, 16)
    in_chans: int = 1  # one per HU window the data stage stacks
    stem_channels: tuple = ()  # stride-2 3x3x3 convs before the patch embedding (empty: plain ViT)
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    # also expose the output of this stem conv (0 = the first, stride 2); None: tokens only
    fine_level: int | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "CTEncoderConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        for key in ("volume_size", "patch_size", "stem_channels"):
            if key in kw:
                kw[key] = tuple(int(v) for v in kw[key])
        return cls(**kw)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(v // p for v, p in zip(self.volume_size, self.patch_size))


class CTEncoder(nn.Module):
    """forward(volumes [B, C, D, H, W]) -> tokens [B, gd, gh, gw, width]."""

    def __init__(self, cfg: CTEncoderConfig):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.cfg = cfg
        self.width = cfg.width
        self.grid = cfg.grid
        if any(v % p for v, p in zip(cfg.volume_size, cfg.patch_size)):
            raise ValueError(f"volume_size {cfg.volume_size} not divisible by patch_size {cfg.patch_size}")
        # A convolutional stem sees a small lesion wherever it sits inside a patch, which one
        # linear patch projection learns poorly from little data ("early convolutions help
        # transformers see better"); each conv halves the grid, so tokens cover the same voxels.
        factor = 2 ** len(cfg.stem_channels)
        if any(p % factor for p in cfg.patch_size):
            raise ValueError(f"patch_size {cfg.patch_size} not divisible by the stem's stride {factor}")
        layers, chans = [], cfg.in_chans
        for out in cfg.stem_channels:
            layers += [nn.Conv3d(chans, out, 3, stride=2, padding=1, bias=False), nn.GroupNorm(1, out), nn.GELU()]
            chans = out
        self.stem = nn.ModuleList(nn.Sequential(*layers[i:i + 3]) for i in range(0, len(layers), 3))
        if cfg.fine_level is not None and not 0 <= cfg.fine_level < len(cfg.stem_channels):
            raise ValueError(f"fine_level {cfg.fine_level} names no stem conv (there are {len(cfg.stem_channels)})")
        self.fine_channels = cfg.stem_channels[cfg.fine_level] if cfg.fine_level is not None else 0
        kernel = tuple(p // factor for p in cfg.patch_size)
        self.patch_embed = nn.Conv3d(chans, cfg.width, kernel_size=kernel, stride=kernel)
        n = self.grid[0] * self.grid[1] * self.grid[2]
        self.pos_embed = nn.Parameter(torch.randn(1, n, cfg.width) * 0.02)
        dpr = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=True, drop_path=dpr[i])
            for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        return self.forward_features(volumes)[0]

    def forward_features(self, volumes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(tokens [B, gd, gh, gw, width], stem features at `fine_level` [B, C, d, h, w] or None)."""
        x, fine = volumes, None
        for level, conv in enumerate(self.stem):
            x = conv(x)
            if level == self.cfg.fine_level:
                fine = x
        x = self.patch_embed(x)  # [B, W, gd, gh, gw]
        b, w = x.shape[:2]
        x = x.flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x.reshape(b, *self.grid, w), fine
