"""The SAM-Path training loss (paper eq. 3, REFERENCE section 2).

For every class ``i`` of ``k``::

    L_i = (1 - alpha) * Dice_i + alpha * Focal_i + beta * MSE(iou_pred_i, IoU(prob_i >= 0.5, y_i))

and the loss is ``sum_i L_i``. Conventions (those of the paper's reference code):

- The decoder's logits ``(B, k, S/4, S/4)`` are first upsampled bilinearly (``align_corners=False``) to the
  label size ``(H, W)``; all terms are computed at label resolution.
- ``prob = softmax(logits)`` over the k classes; ``y_i`` is the one-hot label of class ``i``.
- ``Dice_i = 1 - (2 * sum(prob_i * y_i) + 1) / (sum(prob_i) + sum(y_i) + 1)`` per image (sums over labelled
  pixels), averaged over the batch.
- ``Focal_i`` = mean over labelled pixels of the batch of ``-(1 - p_t)^gamma * log(p_t)``, with
  ``p_t = sigmoid(logit_i)`` where ``y_i = 1`` and ``1 - sigmoid(logit_i)`` elsewhere (raw logits, gamma 2).
- ``IoU_i`` is the per-image IoU of ``prob_i >= 0.5`` against ``y_i`` over labelled pixels (1 when both are
  empty; no gradient); ``MSE`` is averaged over the batch.
- Pixels labelled ``ignore_index`` are excluded from all three terms. An image without labelled pixels
  contributes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LossTerms:
    """The loss and its parts, each summed over classes (``total`` carries the gradient)."""

    total: torch.Tensor
    dice: torch.Tensor
    focal: torch.Tensor
    iou_mse: torch.Tensor


class SamPathLoss(nn.Module):
    """``sum_i (1-alpha) Dice_i + alpha Focal_i + beta MSE_i`` with unlabeled pixels ignored."""

    def __init__(self, alpha: float = 0.25, beta: float = 0.0625, gamma: float = 2.0,
                 ignore_index: int = 255, dice_smooth: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.dice_smooth = dice_smooth

    def forward(self, logits: torch.Tensor, iou_pred: torch.Tensor, labels: torch.Tensor) -> LossTerms:
        """``logits`` (B, k, h, w), ``iou_pred`` (B, k), ``labels`` (B, H, W) integer class indices."""
        k = logits.shape[1]
        logits = logits.float()
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        valid = (labels != self.ignore_index).unsqueeze(1)  # (B, 1, H, W)
        target = F.one_hot(torch.where(valid[:, 0], labels.long(), 0), k).permute(0, 3, 1, 2).float()
        target = target * valid
        vmask = valid.float()
        prob = torch.softmax(logits, dim=1) * vmask

        # Dice per image and class, averaged over images that have labelled pixels.
        has_pixels = vmask.flatten(1).sum(1) > 0  # (B,)
        n_img = has_pixels.sum().clamp(min=1)
        inter = (prob * target).flatten(2).sum(-1)
        denom = prob.flatten(2).sum(-1) + target.flatten(2).sum(-1)
        dice = 1.0 - (2.0 * inter + self.dice_smooth) / (denom + self.dice_smooth)  # (B, k)
        dice = (dice * has_pixels[:, None]).sum(0) / n_img  # (k,)

        # Sigmoid focal loss on the raw logits, mean over labelled pixels.
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * target + (1.0 - p) * (1.0 - target)
        focal_map = ce * (1.0 - p_t) ** self.gamma * vmask
        n_pix = vmask.sum().clamp(min=1.0)
        focal = focal_map.sum(dim=(0, 2, 3)) / n_pix  # (k,)

        # MSE between the predicted IoU and the IoU of the thresholded probability.
        with torch.no_grad():
            hard = (prob >= 0.5).float() * vmask
            i_hard = (hard * target).flatten(2).sum(-1)
            u_hard = ((hard + target) > 0).float().flatten(2).sum(-1)
            iou_true = torch.where(u_hard > 0, i_hard / u_hard.clamp(min=1.0), torch.ones_like(u_hard))
        mse = ((iou_pred.float() - iou_true) ** 2 * has_pixels[:, None]).sum(0) / n_img  # (k,)

        total = ((1.0 - self.alpha) * dice + self.alpha * focal + self.beta * mse).sum()
        return LossTerms(total=total, dice=dice.sum().detach(), focal=focal.sum().detach(),
                         iou_mse=mse.sum().detach())
