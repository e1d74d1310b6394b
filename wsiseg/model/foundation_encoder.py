"""Fp from a pathology foundation model (UNI, UNI2-h, Virchow2, H-optimus, Prov-GigaPath): timm's own ViT.

The encoder is ``timm.create_model`` with the publishers' arguments (:mod:`wsiseg.model.foundation_specs`)
plus ``dynamic_img_size=True``: on every forward timm resamples the stored position table (pretraining
grid) to the working grid itself (``resample_abs_pos_embed``), so the patch tokens are exactly timm's
``forward_features`` at the working input. Prefix tokens (CLS, registers) are dropped.

The token grid must meet SAM's ``G = S / 16`` (64 x 64 at 1024 px). Patch-16 models see the tile as it is.
For patch-14 models the choice is a :class:`TokenGrid`, recorded in the model config so that a model
always runs as it was trained (docs/foundation-encoders.md measures both).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers.mlp import SwiGLUPacked
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from wsiseg.model.foundation_specs import FoundationSpec

#: the layer names the specs use -> the classes
_LAYERS: dict[str, Any] = {"swiglu_packed": SwiGLUPacked, "silu": nn.SiLU}


class TokenGrid(str, enum.Enum):
    """How a patch-14 Fp's token grid is made to meet SAM's ``G x G`` (patch-16 models: no difference).

    ``RESIZE_INPUT``: Fp sees the model input resized (bilinear, antialiased) to ``14 G`` pixels (896 px for
    1024): its grid is ``G x G`` exactly, one token per SAM token, at 16/14 of the pixel size.
    ``RESAMPLE_FEATURES``: Fp sees the input as it is (``floor(S / 14)`` tokens a side, 73 for 1024; the
    last ``S mod 14`` pixels unused) and its features are resized bilinearly (antialiased) to ``G x G``.
    """

    RESIZE_INPUT = "resize_input"
    RESAMPLE_FEATURES = "resample_features"


def create_timm_vit(spec: FoundationSpec, *, meta: bool = False) -> VisionTransformer:
    """timm's model for ``spec`` as its publishers create it, heads dropped, dynamic image size on.

    ``meta=True`` builds it without memory (shapes and key names only)."""
    kwargs = {k: _LAYERS.get(v, v) if k in ("mlp_layer", "act_layer") else v for k, v in spec.kwargs.items()}
    kwargs.update(num_classes=0, dynamic_img_size=True)
    if meta:
        with torch.device("meta"):
            model = timm.create_model(spec.arch, pretrained=False, **kwargs)
    else:
        model = timm.create_model(spec.arch, pretrained=False, **kwargs)
    if not isinstance(model, VisionTransformer):  # every spec names a timm ViT
        raise TypeError(f"{spec.arch} is not a timm VisionTransformer")
    return model


class FoundationEncoder(nn.Module):
    """A pathology foundation model as Fp.

    ``input_size``: the side ``S`` of the model input (pixels, a multiple of 16); ``input_norm``: the
    normalisation (mean, std on 0..1 RGB) of the images given to ``forward`` (ImageNet for SAM-Path); they
    are re-normalised to the model's own (``x' = (x * std_in + mean_in - mean) / std``).

    ``forward(images (B, 3, S, S)) -> features (B, C, S/16, S/16)``: the final norm's patch tokens, row-major
    on the token grid (prefix tokens dropped). Parameters live in ``vit`` under timm's (= the official
    files') names.
    """

    def __init__(self, spec: FoundationSpec, input_size: int, *,
                 input_norm: tuple[Sequence[float], Sequence[float]],
                 token_grid: TokenGrid = TokenGrid.RESIZE_INPUT) -> None:
        super().__init__()
        self.spec = spec
        self.vit = create_timm_vit(spec)
        self.out_channels = int(self.vit.embed_dim)
        self.patch = spec.patch
        self.grid = input_size // 16
        self.token_grid = TokenGrid(token_grid)
        mean_in, std_in = input_norm
        # x' = x * scale + shift, folded once: scale = std_in / std, shift = (mean_in - mean) / std
        scale = torch.tensor(std_in, dtype=torch.float64) / torch.tensor(spec.std, dtype=torch.float64)
        shift = (torch.tensor(mean_in, dtype=torch.float64) - torch.tensor(spec.mean, dtype=torch.float64)) \
            / torch.tensor(spec.std, dtype=torch.float64)
        self.in_scale: torch.Tensor
        self.in_shift: torch.Tensor
        self.register_buffer("in_scale", scale.float().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", shift.float().view(1, 3, 1, 1), persistent=False)

    @property
    def fp_input_size(self) -> int:
        """The side (pixels) of the image Fp itself sees: ``S`` for patch 16, ``14 G`` when resizing."""
        if self.patch == 16 or self.token_grid is TokenGrid.RESAMPLE_FEATURES:
            return self.grid * 16
        return self.grid * self.patch

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images in the model's own normalisation ``(B, 3, H, W)`` -> patch tokens ``(B, C, H/p, W/p)``:
        timm's ``forward_features`` without its prefix tokens."""
        b = x.shape[0]
        gh, gw = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        tokens: torch.Tensor = self.vit.forward_features(x)
        tokens = tokens[:, self.vit.num_prefix_tokens:]
        return tokens.reshape(b, gh, gw, self.out_channels).permute(0, 3, 1, 2).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` input-normalised images -> ``(B, C, S/16, S/16)`` patch tokens."""
        x = x * self.in_scale + self.in_shift
        side = self.fp_input_size
        if x.shape[-1] != side:
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        usable = side // self.patch * self.patch  # RESAMPLE_FEATURES: whole patches only (timm's rule)
        if usable != side:
            x = x[..., :usable, :usable]
        feats = self.patch_tokens(x)
        if feats.shape[-1] != self.grid:
            shrink = feats.shape[-1] > self.grid
            feats = F.interpolate(feats, size=(self.grid, self.grid), mode="bilinear", align_corners=False,
                                  antialias=shrink)
        return feats
