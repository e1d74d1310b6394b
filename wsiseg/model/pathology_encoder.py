"""Fp: the pathology encoder, HIPT's first-stage ViT-S/16 (a timm ``VisionTransformer``)."""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn


class PathologyEncoder(VisionTransformer):  # type: ignore[misc]
    """A DINO/HIPT-style ViT (CLS token, LayerNorm eps 1e-6, qkv bias) built at the working input size.

    Parameter names equal HIPT's ``vit_small`` (``cls_token``, ``pos_embed`` [1, 1 + G*G, C],
    ``patch_embed.proj``, ``blocks.*``, ``norm``), with ``G = img_size / 16``.
    ``forward(images (B, 3, S, S)) -> features (B, C, G, G)``: the CLS token is dropped and the normed
    patch tokens are reshaped to the same grid as SAM's encoder.
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
    ) -> None:
        super().__init__(
            img_size=img_size,
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
        self.grid_size = img_size // patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``(B, 3, S, S)`` normalised images -> ``(B, C, S/16, S/16)`` normed patch tokens."""
        tokens: torch.Tensor = self.forward_features(x)
        patches = tokens[:, self.num_prefix_tokens :, :]
        b, _, c = patches.shape
        g = self.grid_size
        return patches.reshape(b, g, g, c).permute(0, 3, 1, 2).contiguous()
