"""Model input: RGB uint8 tiles -> normalised ``(N, 3, S, S)`` tensors, and the normalisation constants.

Shared by inference (:class:`~wsiseg.model.predictor.SamPathPredictor`), training and the embedding cache,
so that a model sees the same input wherever it runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: ImageNet mean/std on 0..1 RGB (== SAM's pixel_mean/std divided by 255): the input of Fs, R's world.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: HIPT's (DINO's) own normalisation on 0..1 RGB: Fp re-normalises its input to this (REFERENCE section 9).
HIPT_MEAN = (0.5, 0.5, 0.5)
HIPT_STD = (0.5, 0.5, 0.5)


def _per_channel(values: Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` (3) as a ``(1, 3, 1, 1)`` tensor of ``like``'s dtype and device. A tensor already there is
    used as it is: building one from Python floats on a GPU is a copy from pageable memory, which waits
    for the stream (pass tensors made once where that matters)."""
    if isinstance(values, torch.Tensor):
        return values.to(dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def to_model_input(tiles: torch.Tensor, input_size: int,
                   mean: Sequence[float] | torch.Tensor = IMAGENET_MEAN,
                   std: Sequence[float] | torch.Tensor = IMAGENET_STD, *,
                   antialias: bool = False) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 (or 0..255 float) RGB -> ``(N, 3, S, S)`` float32 normalised model input.

    Scaled to 0..1, normalised with ``mean``/``std``, then resized bilinearly (align_corners=False) to
    ``S = input_size`` when ``H, W != S``: the reference code's order and resize
    (``F.interpolate(..., mode="bilinear")`` on the normalised tensor, no antialiasing). ``antialias=True``
    (checkpoints of layout v1) resizes before normalising and antialiases when shrinking.
    """
    x = tiles.permute(0, 3, 1, 2).float().div_(255.0)
    m, s = _per_channel(mean, x), _per_channel(std, x)
    resize = x.shape[-2:] != (input_size, input_size)
    if resize and antialias:
        shrink = x.shape[-2] > input_size or x.shape[-1] > input_size
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False,
                          antialias=shrink)
        return (x - m) / s
    x = (x - m) / s
    if resize:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
    return x
