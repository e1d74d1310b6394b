"""Fs: Segment Anything's ViT image encoder, with or without its neck (REFERENCE.md sections 1 and 9)."""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from wsiseg.model.attention import AttentionKernel, RelPosAttention

#: Output channels of SAM's own neck.
NECK_CHANNELS = 256


class SamImageEncoder(ImageEncoderViT):  # type: ignore[misc]
    """SAM's ``ImageEncoderViT``; its neck kept (``neck=True``) or replaced by the identity.

    Parameter names are segment-anything's ``image_encoder.*`` (minus ``neck.*`` without the neck), so
    official weights load key for key. ``forward(images (B, 3, S, S)) -> features (B, C, S/16, S/16)``:
    the pre-neck tokens (``C = embed_dim``; SAM-Path's Fs) or SAM's own 256-channel neck output ("Fine-tuned
    SAM"). Attention runs through fused kernels (:mod:`wsiseg.model.attention`); ``attention`` picks how.
    """

    def __init__(
        self,
        *,
        img_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        global_attn_indexes: tuple[int, ...],
        window_size: int = 14,
        patch_size: int = 16,
        mlp_ratio: float = 4.0,
        neck: bool = False,
        attention: AttentionKernel = AttentionKernel.FOLDED,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            out_chans=NECK_CHANNELS,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_attn_indexes,
            window_size=window_size,
        )
        if not neck:
            self.neck = nn.Identity()
        self.has_neck = neck
        self.out_channels = NECK_CHANNELS if neck else embed_dim
        self.patch_size = patch_size
        for blk in self.blocks:
            grid = blk.attn.rel_pos_h.shape[0] // 2 + 1, blk.attn.rel_pos_w.shape[0] // 2 + 1
            blk.attn = RelPosAttention(embed_dim, num_heads, grid, attention)

    def set_attention(self, kernel: AttentionKernel, pad_values: bool = False) -> None:
        """Compute every block's attention with ``kernel`` (the function stays the same)."""
        for blk in self.blocks:
            blk.attn.kernel = AttentionKernel(kernel)
            blk.attn.pad_values = pad_values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` ImageNet-normalised images -> ``(B, C, S/16, S/16)`` features."""
        out: torch.Tensor = super().forward(x)
        return out
