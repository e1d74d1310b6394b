"""Training augmentations with the reference code's probabilities, drawn from an explicit per-sample
generator (reproducible with any worker count).

Image mode, in the reference's order (albumentations; REFERENCE.md section 9):

1. ``resized_crop``: RandomResizedCrop (p = 1): a crop of area ``scale`` (0.08-1) x the image and aspect
   3/4-4/3 (10 tries, then the largest central crop within that aspect range), resized to the output
   size (bilinear for the image, nearest for the label). Without it, the image is resized to the output
   size when it is not already that size (the reference's test-time ``Resize``).
2. ``flip``: Flip (p = 0.75): horizontal, vertical or both, each with probability 1/3.
3. ``rot90``: RandomRotate90 (p = 0.5): ``k`` quarter turns, ``k`` uniform in 0..3.
4. ``color_jitter``: ColorJitter (p = 0.5): brightness, contrast, saturation factors uniform in
   ``[1 - j, 1 + j]`` and hue shift uniform in ``[-j, j]`` (``j = 0.1``), applied in a random order.

Feature mode (embedding cache): only ``flip`` and ``rot90``, with the same probabilities, applied to the
cached feature grid ``(C, G, G)`` and to the label together; the others would need the encoders again.
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
#: probabilities of the reference's albumentations pipeline
P_FLIP = 0.75
P_ROT90 = 0.5
P_COLOR_JITTER = 0.5


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


def _chance(gen: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=gen)) < p


def crop_box(height: int, width: int, cfg: AugmentConfig, gen: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box ``(top, left, h, w)`` in an image of ``height x width`` pixels."""
    area = height * width
    log_lo, log_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
    for _ in range(10):
        target = area * _uniform(gen, *cfg.crop_scale)
        ratio = math.exp(_uniform(gen, log_lo, log_hi))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=gen))
            left = int(torch.randint(0, width - w + 1, (), generator=gen))
            return top, left, h, w
    ratio = width / height  # fallback: the largest central crop within the aspect range
    if ratio < cfg.crop_ratio[0]:
        w, h = width, round(width / cfg.crop_ratio[0])
    elif ratio > cfg.crop_ratio[1]:
        h, w = height, round(height * cfg.crop_ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def resize_pair(image: torch.Tensor, label: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``image (3, H, W)`` bilinear (align_corners=False, no antialias) and ``label (H, W)`` nearest to
    ``size x size`` (what albumentations' ``Resize`` does with OpenCV's linear/nearest modes)."""
    if image.shape[-2:] == (size, size) and label.shape == (size, size):
        return image, label
    image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    label = F.interpolate(label[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
    return image, label


def _flip_rot(x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip/rotate ``x`` (..., H, W) and ``y`` (H', W') together (the same geometric transform)."""
    if Augment.FLIP in cfg.augments and _chance(gen, P_FLIP):
        dims = [(-1,), (-2,), (-2, -1)][int(torch.randint(0, 3, (), generator=gen))]
        x, y = x.flip(dims), y.flip(dims)
    if Augment.ROT90 in cfg.augments and _chance(gen, P_ROT90):
        k = int(torch.randint(0, 4, (), generator=gen))
        if k:
            x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    return x, y


def _color_jitter(image: torch.Tensor, j: float, gen: torch.Generator) -> torch.Tensor:
    factors = [_uniform(gen, 1 - j, 1 + j) for _ in range(3)] + [_uniform(gen, -min(j, 0.5), min(j, 0.5))]
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in torch.randperm(4, generator=gen).tolist():
        image = ops[i](image, factors[i])
    return image


def augment_image(image: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator,
                  size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (3, H, W) float 0..1 and ``label`` (H, W) int64 -> the augmented pair at ``size x size``
    (default: ``H x W``, which must then be square)."""
    if size is None:
        if label.shape[0] != label.shape[1]:
            raise ValueError(f"a non-square {tuple(label.shape)} sample needs an output size")
        size = int(label.shape[0])
    if Augment.RESIZED_CROP in cfg.augments:
        top, left, h, w = crop_box(int(label.shape[0]), int(label.shape[1]), cfg, gen)
        image, label = image[:, top:top + h, left:left + w], label[top:top + h, left:left + w]
    image, label = resize_pair(image, label, size)
    image, label = _flip_rot(image, label, cfg, gen)
    if Augment.COLOR_JITTER in cfg.augments and cfg.jitter > 0 and _chance(gen, P_COLOR_JITTER):
        image = _color_jitter(image, cfg.jitter, gen)
    return image.clamp(0.0, 1.0).contiguous(), label.contiguous()


def augment_features(features: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig,
                     gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``features`` (C, G, G) and ``label`` (P, P): flips and rot90 only (others are not applicable)."""
    features, label = _flip_rot(features, label, cfg, gen)
    return features.contiguous(), label.contiguous()


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of sample ``index`` in ``epoch``: independent of worker count and order."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 10_000_019 + index)
