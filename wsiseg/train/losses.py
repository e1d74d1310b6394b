"""The SAM-Path training loss, exactly as the paper's reference code computes it (REFERENCE.md section 9).

Inputs: decoder logits ``(B, C, h, w)`` of a reference-layout model (``C = k + 1``: channel 0 is the
"unlabeled" slot, channel ``c`` is class ``c - 1``), predicted IoUs ``(B, C)`` and labels ``(B, H, W)`` of
class indices ``0..k-1`` with ``ignore_index`` for unlabelled pixels. In the reference's terms the target is
``t = label + 1`` on labelled pixels and ``0`` on unlabelled ones. Then:

1. the logits are upsampled bilinearly (``align_corners=False``) to ``(H, W)``;
2. at unlabelled pixels every channel's logit is multiplied by 0 and the target is 0; ``y`` is the one-hot
   target over all ``C`` channels (so unlabelled pixels stay in the averages below, as in the reference);
3. ``p = softmax(logits)`` over ALL ``C`` channels;
4. Dice (MONAI ``DiceLoss(include_background=False)`` on ``p``): for every sample and channel ``c >= 1``,
   ``1 - (2 * sum(p_c * y_c) + 1e-5) / (sum(p_c) + sum(y_c) + 1e-5)`` over pixels, then the mean;
5. focal (MONAI ``FocalLoss(include_background=False)``, sigmoid, gamma 2, no alpha) on the raw (zeroed)
   logits: ``BCE(logit, y) * (1 - p_t)^2`` with ``p_t = sigmoid(logit)`` where ``y = 1``, else
   ``1 - sigmoid(logit)``, the plain mean over samples, channels ``1..`` and pixels;
6. IoU: ``mse(iou_pred[:, 1:], iou_true[:, 1:])`` with ``iou_true`` the per-sample, per-channel IoU of
   ``p >= 0.5`` against ``y``: ``I / (U + 1e-7)`` (no gradient);
7. ``total = alpha * focal + (1 - alpha) * dice + beta * iou`` (the reference's ``focal_cof``, ``dice_cof``,
   ``iou_cof``; BCSS 0.25 / 0.75 / 0.0625, CRAG 0.125 / 0.875 / 0).

Tests check this against MONAI's own ``DiceLoss``/``FocalLoss`` and against the reference code's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: MONAI DiceLoss's default smoothing (numerator and denominator)
DICE_SMOOTH = 1e-5
#: the reference's epsilon in the IoU target's union
IOU_EPS = 1e-7


@dataclass(frozen=True)
class LossTerms:
    """The loss and its three parts (``total`` carries the gradient; the parts are detached)."""

    total: torch.Tensor
    dice: torch.Tensor
    focal: torch.Tensor
    iou_mse: torch.Tensor


def reference_target(labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Labels ``(B, H, W)`` (class indices, ``ignore_index`` = unlabelled) -> the reference's target
    ``(B, H, W)`` int64: ``label + 1``, and 0 where unlabelled."""
    labels = labels.long()
    return torch.where(labels == ignore_index, torch.zeros_like(labels), labels + 1)


def dice_loss(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """MONAI ``DiceLoss(include_background=False)``: ``(B, C, H, W)`` probabilities and one-hot target ->
    the mean over samples and channels ``1..`` of ``1 - (2I + s) / (P + G + s)``, ``s = 1e-5``."""
    p, y = probs[:, 1:].flatten(2), onehot[:, 1:].flatten(2)
    inter = (p * y).sum(-1)
    denom = p.sum(-1) + y.sum(-1)
    return (1.0 - (2.0 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH)).mean()


def focal_loss(logits: torch.Tensor, onehot: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """MONAI ``FocalLoss(include_background=False)`` (sigmoid, no alpha): the plain mean over samples,
    channels ``1..`` and pixels of ``BCE(x, y) * (1 - p_t)^gamma``."""
    x, y = logits[:, 1:], onehot[:, 1:]
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    weight = torch.exp(gamma * F.logsigmoid(-x * (2.0 * y - 1.0)))  # (1 - p_t)^gamma, stably
    return (bce * weight).mean()


def iou_target(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel IoU ``(B, C)`` of ``probs >= 0.5`` against the one-hot target."""
    hard = (probs >= 0.5).to(onehot.dtype)
    inter = (hard * onehot).sum(dim=(2, 3))
    union = hard.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3)) - inter
    return inter / (union + IOU_EPS)


class SamPathLoss(nn.Module):
    """``alpha * focal + (1 - alpha) * dice + beta * iou_mse`` as in the module docstring."""

    def __init__(self, alpha: float = 0.25, beta: float = 0.0625, gamma: float = 2.0,
                 ignore_index: int = 255) -> None:
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, iou_pred: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        """``logits (B, C, h, w)``, ``iou_pred (B, C)``, ``labels (B, H, W)`` -> :class:`LossTerms`."""
        c = logits.shape[1]
        logits = logits.float()
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        target = reference_target(labels, self.ignore_index)
        labelled = (target != 0).unsqueeze(1).to(logits.dtype)
        logits = logits * labelled
        onehot = F.one_hot(target, c).permute(0, 3, 1, 2).to(logits.dtype)
        probs = torch.softmax(logits, dim=1)
        dice = dice_loss(probs, onehot)
        focal = focal_loss(logits, onehot, self.gamma)
        with torch.no_grad():
            iou_true = iou_target(probs, onehot)
        iou_mse = F.mse_loss(iou_pred.float()[:, 1:], iou_true[:, 1:])
        total = self.alpha * focal + (1.0 - self.alpha) * dice + self.beta * iou_mse
        return LossTerms(total=total, dice=dice.detach(), focal=focal.detach(), iou_mse=iou_mse.detach())
