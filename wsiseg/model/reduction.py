"""R: the dimensionality-reduction module that replaces SAM's neck (REFERENCE.md section 1)."""

from __future__ import annotations

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


class Reduction(nn.Module):
    """Conv1x1 (no bias) -> LayerNorm2d -> Conv3x3 (padding 1, no bias) -> LayerNorm2d, no activation.

    ``forward(features (B, in_channels, G, G)) -> (B, out_channels, G, G)``; randomly initialised.
    """

    def __init__(self, in_channels: int, out_channels: int = 256) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            LayerNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        return out
