"""Training augmentations, drawn from an explicit per-sample generator (reproducible with any worker count).

Image mode (the reference code's set): random resized crop (area scale 0.08-1, aspect 3/4-4/3, back to the
patch size), horizontal/vertical flips, rot90, colour jitter (brightness, contrast, saturation, hue 0.1).
Feature mode (embedding cache): only flips and rot90, applied to the cached feature grid ``(C, G, G)`` and
to the label ``(P, P)`` together; the others would need the encoders to run again.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF


class Augment(str, enum.Enum):
    """One augmentation; ``FLIP`` and ``ROT90`` also work on cached features."""

    RESIZED_CROP = "resized_crop"
    FLIP = "flip"
    ROT90 = "rot90"
    COLOR_JITTER = "color_jitter"


FEATURE_AUGMENTS = frozenset({Augment.FLIP, Augment.ROT90})


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations and their strengths."""

    augments: frozenset[Augment] = frozenset(Augment)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: float = 0.1

    @classmethod
    def of(cls, names: Iterable[str], crop_scale: tuple[float, float] = (0.08, 1.0),
           jitter: float = 0.1) -> AugmentConfig:
        return cls(augments=frozenset(Augment(n) for n in names),
                   crop_scale=(float(crop_scale[0]), float(crop_scale[1])), jitter=float(jitter))


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _flip_rot(x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip/rotate ``x`` (..., H, W) and ``y`` (H', W') together (the same geometric transform)."""
    if Augment.FLIP in cfg.augments:
        if float(torch.rand((), generator=gen)) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        if float(torch.rand((), generator=gen)) < 0.5:
            x, y = x.flip(-2), y.flip(-2)
    if Augment.ROT90 in cfg.augments:
        k = int(torch.randint(0, 4, (), generator=gen))
        if k:
            x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    return x, y


def augment_image(image: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (3, P, P) float 0..1 and ``label`` (P, P) int64 -> augmented pair of the same shapes."""
    p_h, p_w = label.shape
    if Augment.RESIZED_CROP in cfg.augments:
        area = p_h * p_w
        for _ in range(10):
            target = area * _uniform(gen, *cfg.crop_scale)
            ratio = math.exp(_uniform(gen, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])))
            w = round(math.sqrt(target * ratio))
            h = round(math.sqrt(target / ratio))
            if 0 < w <= p_w and 0 < h <= p_h:
                top = int(torch.randint(0, p_h - h + 1, (), generator=gen))
                left = int(torch.randint(0, p_w - w + 1, (), generator=gen))
                image = F.interpolate(image[None, :, top:top + h, left:left + w], size=(p_h, p_w),
                                      mode="bilinear", align_corners=False)[0]
                label = F.interpolate(label[None, None, top:top + h, left:left + w].float(), size=(p_h, p_w),
                                      mode="nearest")[0, 0].long()
                break
    image, label = _flip_rot(image, label, cfg, gen)
    if Augment.COLOR_JITTER in cfg.augments and cfg.jitter > 0:
        j = cfg.jitter
        image = TF.adjust_brightness(image, _uniform(gen, 1 - j, 1 + j))
        image = TF.adjust_contrast(image, _uniform(gen, 1 - j, 1 + j))
        image = TF.adjust_saturation(image, _uniform(gen, 1 - j, 1 + j))
        image = TF.adjust_hue(image, _uniform(gen, -j, j) if j <= 0.5 else 0.0)
    return image.clamp(0.0, 1.0).contiguous(), label.contiguous()


def augment_features(features: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig,
                     gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``features`` (C, G, G) and ``label`` (P, P): flips and rot90 only (others are not applicable)."""
    features, label = _flip_rot(features, label, cfg, gen)
    return features.contiguous(), label.contiguous()


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of sample ``index`` in ``epoch``: independent of worker count and order."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 10_000_019 + index)
