"""Fp: the pathology encoder, HIPT's first-stage ViT-S/16 (a DINO ViT; timm's ``VisionTransformer`` modules).

As the SAM-Path reference code runs it (REFERENCE.md section 9): the ImageNet-normalised input is
re-normalised to HIPT's own mean/std (0.5/0.5), and the position embeddings are interpolated on every
forward, DINO-style, from the table stored at the pretraining grid (14 x 14 for HIPT's 224 px training).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def dino_position_table(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """DINO's ``interpolate_pos_encoding`` for a square ``grid x grid`` token grid.

    ``pos_embed (1, 1 + n*n, C)`` (CLS first, then an ``n x n`` table) -> ``(1, 1 + grid*grid, C)``: unchanged
    when ``grid == n``, else the table is resized bicubically (align_corners=False) with
    ``scale_factor = (grid + 0.1) / n`` (DINO's "+0.1 to avoid rounding down"; not the same as asking for
    ``size=grid``), and the CLS embedding is kept.
    """
    n = math.isqrt(pos_embed.shape[1] - 1)
    if grid == n:
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    factor = (grid + 0.1) / n
    table = F.interpolate(patch_pos.reshape(1, n, n, dim).permute(0, 3, 1, 2), scale_factor=(factor, factor),
                          mode="bicubic")
    if table.shape[-2:] != (grid, grid):  # cannot happen for grid >= 1; DINO asserts the same
        raise RuntimeError(f"position table resized to {tuple(table.shape[-2:])}, expected {grid}x{grid}")
    return torch.cat([cls_pos, table.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)], dim=1)


class PathologyEncoder(VisionTransformer):  # type: ignore[misc]
    """A DINO/HIPT ViT (CLS token, LayerNorm eps 1e-6, qkv bias, exact GELU, no layer scale).

    Parameter names equal HIPT's ``vit_small`` (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
    ``blocks.*``, ``norm``). ``pos_embed`` is ``(1, 1 + T*T, C)`` with ``T = pos_grid`` (the stored table;
    default ``img_size / patch``); on a ``G x G`` token grid it is interpolated with
    :func:`dino_position_table` on every forward.

    ``input_norm = (mean, std)`` (0..1 RGB) is the normalisation of the images given to ``forward``; they
    are re-normalised to ``HIPT mean/std = 0.5/0.5`` first, ``x' = (x * std + mean - 0.5) / 0.5``. ``None``
    takes the input as it is (checkpoints of layout v1).

    ``forward(images (B, 3, S, S)) -> features (B, C, S/16, S/16)``: the final LayerNorm's patch tokens
    (CLS dropped), row-major on the token grid.
    """

    def __init__(
        self,
        *,
        img_size: int,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        patch_size: int = 16,
        mlp_ratio: float = 4.0,
        pos_grid: int | None = None,
        input_norm: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        table = pos_grid or img_size // patch_size
        super().__init__(
            img_size=table * patch_size,
            patch_size=patch_size,
            num_classes=0,
            global_pool="",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            class_token=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
        self.out_channels = embed_dim
        self.patch = patch_size
        self.renormalize = input_norm is not None
        mean, std = input_norm if input_norm is not None else ((0.0,) * 3, (1.0,) * 3)
        self.in_mean: torch.Tensor
        self.in_std: torch.Tensor
        self.register_buffer("in_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("in_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``(B, 3, S, S)`` normalised images -> ``(B, C, S/16, S/16)`` normed patch tokens."""
        if self.renormalize:
            x = (x * self.in_std + self.in_mean - 0.5) / 0.5
        assert self.cls_token is not None and self.pos_embed is not None  # built with class_token=True
        tokens: torch.Tensor = self.patch_embed.proj(x)  # (B, C, G, G)
        b, c, g, _ = tokens.shape
        tokens = tokens.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        tokens = tokens + dino_position_table(self.pos_embed, g)
        tokens = self.norm(self.blocks(tokens))
        return tokens[:, 1:].reshape(b, g, g, c).permute(0, 3, 1, 2).contiguous()
