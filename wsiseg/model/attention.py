"""SAM's image-encoder attention (decomposed relative positions) through PyTorch's fused attention kernels.

segment-anything's ``Attention`` materialises the ``(B * heads, N, N)`` score matrix, adds the decomposed
relative-position terms to it and takes a float32 softmax: on a 64 x 64 token grid that is several GB of
memory traffic per tile in each global block. :class:`RelPosAttention` computes the same function (same
parameters, same key names) with ``F.scaled_dot_product_attention``, in one of two ways
(:class:`AttentionKernel`):

- ``BIAS``: the relative-position terms as an additive ``attn_mask`` (the memory-efficient kernel);
- ``FOLDED``: the terms folded into the dot product itself, so that no ``N x N`` tensor exists at all:
  ``q' = [q * scale, rel_h(q), rel_w(q)]`` and ``k' = [k, onehot(row(k)), onehot(col(k))]`` give
  ``q' . k' = scale * q . k + rel_h[q, row(k)] + rel_w[q, col(k)]`` (values zero-padded to the same width).

``EAGER`` keeps segment-anything's own computation (the reference for tests).
"""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos


class AttentionKernel(str, enum.Enum):
    """How :class:`RelPosAttention` computes attention; all give the same function up to rounding."""

    EAGER = "eager"  #: segment-anything's explicit score matrix and softmax
    BIAS = "bias"  #: fused attention with the relative-position terms as an additive mask
    FOLDED = "folded"  #: fused attention with the terms folded into q and k (no N x N tensor)


def _rel_pos(size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """segment-anything's ``get_rel_pos(size, size, rel_pos)`` -> ``(size, size, d)``, with the index made
    on ``rel_pos``'s device: its own is a CPU tensor, and indexing a GPU table with it copies the index over
    from pageable memory, which waits for the stream (twice per attention block, every forward). Tables of
    another length (resized by interpolation there) take segment-anything's own path."""
    if rel_pos.shape[0] != 2 * size - 1:
        return get_rel_pos(size, size, rel_pos)  # type: ignore[no-any-return]
    coords = torch.arange(size, device=rel_pos.device)
    return rel_pos[coords[:, None] - coords[None, :] + (size - 1)]


def _rel_terms(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, h: int,
               w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decomposed relative-position terms of queries ``q (B, heads, h * w, d)`` (unscaled):
    ``rel_h (B, heads, h, w, h)`` (over key rows) and ``rel_w (B, heads, h, w, w)`` (over key columns)."""
    b, n_heads, _, d = q.shape
    r_q = q.reshape(b, n_heads, h, w, d)
    rh = _rel_pos(h, rel_pos_h).to(q.dtype)  # (h_q, h_k, d)
    rw = _rel_pos(w, rel_pos_w).to(q.dtype)  # (w_q, w_k, d)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw)
    return rel_h, rel_w


class RelPosAttention(Attention):  # type: ignore[misc]
    """segment-anything's ``Attention`` (global or windowed, decomposed relative positions) computed with
    ``kernel``. ``forward(x (B, H, W, C)) -> (B, H, W, C)``; parameters and their names are unchanged."""

    def __init__(self, dim: int, num_heads: int, input_size: tuple[int, int],
                 kernel: AttentionKernel = AttentionKernel.FOLDED) -> None:
        super().__init__(dim, num_heads=num_heads, qkv_bias=True, use_rel_pos=True, input_size=input_size)
        self.kernel = AttentionKernel(kernel)
        #: FOLDED: pad v to the width of q' and k' (lets a flash kernel run; measured slower on an H200)
        self.pad_values = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is AttentionKernel.EAGER:
            out: torch.Tensor = super().forward(x)
            return out
        b, h, w, _ = x.shape
        n = h * w
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, N, d) each
        d = q.shape[-1]
        rel_h, rel_w = _rel_terms(q, self.rel_pos_h, self.rel_pos_w, h, w)
        if self.kernel is AttentionKernel.BIAS:
            bias = (rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).reshape(b, self.num_heads, n, n)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            o = self._folded(q, k, v, rel_h, rel_w, h, w, d)
        o = o.transpose(1, 2).reshape(b, h, w, -1)
        out = self.proj(o)
        return out

    def _folded(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
                rel_w: torch.Tensor, h: int, w: int, d: int) -> torch.Tensor:
        """Fused attention on ``q' . k'`` (see the module docstring), widths padded to a multiple of 8."""
        b, n_heads, n, _ = q.shape
        width = d + h + w
        pad = -width % 8
        rows = torch.arange(n, device=q.device) // w
        cols = torch.arange(n, device=q.device) % w
        one_h = F.one_hot(rows, h).to(q.dtype)  # (N, h): key -> its row
        one_w = F.one_hot(cols, w).to(q.dtype)  # (N, w): key -> its column
        zeros_q = q.new_zeros(b, n_heads, n, pad)
        q2 = torch.cat([q * self.scale, rel_h.reshape(b, n_heads, n, h), rel_w.reshape(b, n_heads, n, w),
                        zeros_q], dim=-1)
        k2 = torch.cat([k, one_h.expand(b, n_heads, n, h), one_w.expand(b, n_heads, n, w), zeros_q],
                       dim=-1)
        v2 = F.pad(v, (0, width + pad - d)) if self.pad_values else v
        o = F.scaled_dot_product_attention(q2, k2, v2, scale=1.0)
        return o[..., :d]
