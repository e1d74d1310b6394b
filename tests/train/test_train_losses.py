"""The SAM-Path loss: the reference code's own values, MONAI's DiceLoss/FocalLoss, and hand computations.

``data/reference_loss.npz`` holds inputs and the loss terms that the reference code's ``SAMLoss`` (MONAI
1.2 losses; cvlab-stonybrook/SAMPath @ 369c195) computed for them: a 6-channel BCSS-like case (targets 0..5
with unlabeled blocks, class 3 absent from one sample) and a 3-channel CRAG-like case, with the BCSS and
CRAG coefficients.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsiseg.train.losses import SamPathLoss, dice_loss, focal_loss, iou_target, reference_target

torch.set_num_threads(1)
DATA = Path(__file__).parent / "data" / "reference_loss.npz"
IGNORE = 255


def _labels(reference_targets: torch.Tensor) -> torch.Tensor:
    """The reference's targets (0 unlabeled, c = class c - 1) as wsiseg labels."""
    return torch.where(reference_targets == 0, torch.tensor(IGNORE), reference_targets - 1)


@pytest.mark.parametrize("case", ["c6", "c3"])
@pytest.mark.parametrize(("coef", "alpha", "beta"), [("bcsscoef", 0.25, 0.0625), ("cragcoef", 0.125, 0.0)])
def test_loss_equals_the_reference_codes_output(case: str, coef: str, alpha: float, beta: float) -> None:
    d = np.load(DATA)
    targets = torch.from_numpy(d[f"{case}_targets"].astype(np.int64))
    terms = SamPathLoss(alpha, beta, ignore_index=IGNORE)(torch.from_numpy(d[f"{case}_logits"]),
                                                          torch.from_numpy(d[f"{case}_iou_pred"]),
                                                          _labels(targets))
    assert float(terms.total) == pytest.approx(float(d[f"{case}_{coef}_loss"]), abs=1e-6)
    assert float(terms.dice) == pytest.approx(float(d[f"{case}_{coef}_dice"]), abs=1e-6)
    assert float(terms.focal) == pytest.approx(float(d[f"{case}_{coef}_focal"]), abs=1e-6)
    assert float(terms.iou_mse) == pytest.approx(float(d[f"{case}_{coef}_iou"]), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_and_focal_equal_monai_with_unlabeled_pixels(seed: int) -> None:
    """MONAI's own DiceLoss/FocalLoss(include_background=False), called as the reference calls them."""
    import monai.losses as monai_losses  # a test dependency (pyproject [test]): never skipped
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = 3, 5, 24, 20
    logits = torch.randn(b, c, h, w, generator=g) * 3
    labels = torch.randint(0, c - 1, (b, h, w), generator=g)
    labels[torch.rand(b, h, w, generator=g) < 0.3] = IGNORE  # unlabelled pixels
    labels[1][labels[1] == 2] = 0  # a class absent from one sample
    target = reference_target(labels, IGNORE)
    zeroed = logits * (target != 0).unsqueeze(1)
    onehot = F.one_hot(target, c).permute(0, 3, 1, 2).float()
    probs = torch.softmax(zeroed, 1)
    want_dice = monai_losses.DiceLoss(include_background=False, to_onehot_y=False, sigmoid=False,
                                      softmax=False)(probs, onehot)
    want_focal = monai_losses.FocalLoss(include_background=False, to_onehot_y=False)(zeroed, onehot)
    assert float(dice_loss(probs, onehot)) == pytest.approx(float(want_dice), abs=1e-6)
    assert float(focal_loss(zeroed, onehot)) == pytest.approx(float(want_focal), abs=1e-6)
    terms = SamPathLoss(0.3, 0.0, ignore_index=IGNORE)(logits, torch.zeros(b, c), labels)
    assert float(terms.total) == pytest.approx(0.3 * float(want_focal) + 0.7 * float(want_dice), abs=1e-6)


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_hand_computation_with_an_unlabeled_pixel() -> None:
    """Two classes (3 channels), 1x2 pixels; the second pixel is unlabelled and still counts, as in the
    reference: its logits become 0, so it adds softmax 1/3 to every channel's Dice denominator and
    BCE(0, 0) * 0.5^2 = ln 2 / 4 to the focal mean of channels 1 and 2."""
    logits = torch.tensor([[[[9.0, 4.0]], [[2.0, 5.0]], [[0.0, -3.0]]]])  # (1, 3, 1, 2)
    iou_pred = torch.tensor([[0.1, 0.7, 0.2]])
    labels = torch.tensor([[[1, IGNORE]]])  # pixel 0 is class 1 = channel 2
    alpha, beta = 0.25, 0.5
    terms = SamPathLoss(alpha, beta, ignore_index=IGNORE)(logits, iou_pred, labels)
    e = [math.exp(9.0), math.exp(2.0), math.exp(0.0)]
    p = [v / sum(e) for v in e]  # softmax of pixel 0 over all three channels
    third = 1 / 3  # pixel 1: softmax of zeros
    s = 1e-5
    dice1 = 1 - (2 * 0 + s) / (p[1] + third + 0 + s)  # channel 1: no target pixel
    dice2 = 1 - (2 * p[2] + s) / (p[2] + third + 1 + s)  # channel 2: target at pixel 0
    dice = (dice1 + dice2) / 2

    def focal(x: float, y: int) -> float:
        pt = _sig(x) if y else 1 - _sig(x)
        return -((1 - pt) ** 2) * math.log(pt)

    focal_mean = (focal(2.0, 0) + focal(0.0, 1) + 2 * focal(0.0, 0)) / 4
    # hard masks (p >= 0.5): pixel 0 -> channel 0 only; pixel 1 -> none. IoU of channels 1, 2 = 0
    iou = ((0.7 - 0.0) ** 2 + (0.2 - 0.0) ** 2) / 2
    assert float(terms.dice) == pytest.approx(dice, rel=1e-6)
    assert float(terms.focal) == pytest.approx(focal_mean, rel=1e-6)
    assert float(terms.iou_mse) == pytest.approx(iou, rel=1e-6)
    assert float(terms.total) == pytest.approx(alpha * focal_mean + (1 - alpha) * dice + beta * iou, rel=1e-6)


def test_iou_target_and_upsampling() -> None:
    """Logits are upsampled (bilinear) to the label size first; the IoU target of a perfect prediction
    is 1 - 1e-7-ish, of an empty class with no prediction 0."""
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, :, 0] = 20.0
    logits[0, 2, :, 1] = 20.0
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    onehot = F.one_hot(reference_target(labels, IGNORE), 3).permute(0, 3, 1, 2).float()
    iou = iou_target(torch.softmax(up, 1), onehot)
    assert iou[0, 1].item() == pytest.approx(1.0) and iou[0, 2].item() == pytest.approx(1.0)
    assert iou[0, 0].item() == 0.0  # channel 0: no target, no prediction
    terms = SamPathLoss(0.25, 1.0, ignore_index=IGNORE)(logits, torch.tensor([[0.0, 1.0, 1.0]]), labels)
    assert float(terms.iou_mse) == pytest.approx(0.0, abs=1e-10)


def test_gradient_reaches_logits_and_iou_only_through_the_loss_terms() -> None:
    logits = torch.randn(2, 4, 4, 4, requires_grad=True)
    iou = torch.rand(2, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 16, 16))
    labels[0, :8] = IGNORE
    terms = SamPathLoss(0.25, 0.0625, ignore_index=IGNORE)(logits, iou, labels)
    terms.total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert iou.grad is not None and iou.grad[:, 0].abs().sum() == 0  # channel 0's IoU is not trained
    assert not terms.dice.requires_grad and not terms.focal.requires_grad
