"""The SAM-Path loss against a hand computation on a tiny case."""

from __future__ import annotations

import math

import pytest
import torch

from wsiseg.train.losses import SamPathLoss

torch.set_num_threads(1)


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_loss_matches_hand_computation() -> None:
    # one image, two classes, 1x2 pixels; the second pixel is ignored (255)
    logits = torch.tensor([[[[2.0, 5.0]], [[0.0, -3.0]]]])  # (1, 2, 1, 2)
    iou_pred = torch.tensor([[0.7, 0.2]])
    labels = torch.tensor([[[1, 255]]])
    alpha, beta = 0.25, 0.5
    terms = SamPathLoss(alpha=alpha, beta=beta)(logits, iou_pred, labels)

    # only pixel 0 counts: softmax([2, 0]) -> p0 = e^2/(e^2+1), p1 = 1/(e^2+1); label = class 1
    p0 = math.exp(2) / (math.exp(2) + 1)
    p1 = 1 - p0
    dice0 = 1 - (2 * 0 + 1) / (p0 + 0 + 1)
    dice1 = 1 - (2 * p1 + 1) / (p1 + 1 + 1)
    # focal on raw logits: class 0 target 0 with logit 2, class 1 target 1 with logit 0
    q0 = 1 - _sig(2.0)  # p_t for class 0
    q1 = _sig(0.0)
    focal0 = -((1 - q0) ** 2) * math.log(q0)
    focal1 = -((1 - q1) ** 2) * math.log(q1)
    # hard masks: class 0 predicted (p0 >= .5) but not labelled -> IoU 0; class 1 labelled, not predicted -> 0
    mse0 = (0.7 - 0.0) ** 2
    mse1 = (0.2 - 0.0) ** 2
    expected = (1 - alpha) * (dice0 + dice1) + alpha * (focal0 + focal1) + beta * (mse0 + mse1)
    assert float(terms.total) == pytest.approx(expected, rel=1e-6)
    assert float(terms.dice) == pytest.approx(dice0 + dice1, rel=1e-6)
    assert float(terms.focal) == pytest.approx(focal0 + focal1, rel=1e-6)
    assert float(terms.iou_mse) == pytest.approx(mse0 + mse1, rel=1e-6)


def test_iou_target_is_one_for_a_perfect_prediction_and_logits_are_upsampled() -> None:
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 0, :, 0] = 20.0
    logits[:, 1, :, 1] = 20.0
    terms = SamPathLoss(alpha=0.0, beta=1.0)(logits, torch.ones(1, 2), labels)
    # bilinear upsampling of a 2x2 step to 8x8 keeps the argmax exact, so hard IoU = 1 for both classes
    assert float(terms.iou_mse) == pytest.approx(0.0, abs=1e-9)
    assert float(terms.dice) < 0.02


def test_ignored_pixels_change_nothing_and_gradient_flows() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    iou_pred = torch.rand(2, 3, generator=gen)
    labels = torch.randint(0, 3, (2, 4, 4), generator=gen)
    loss_fn = SamPathLoss()
    full = loss_fn(logits, iou_pred, labels).total
    masked_labels = labels.clone()
    masked_labels[:, 0, :] = 255
    masked = loss_fn(logits, iou_pred, masked_labels).total
    # changing logits on ignored pixels leaves the loss unchanged
    logits2 = logits.detach().clone()
    logits2[:, :, 0, :] += 100.0
    masked2 = loss_fn(logits2, iou_pred, masked_labels).total
    assert float(masked.detach()) == pytest.approx(float(masked2), rel=1e-6)
    assert float(full.detach()) != pytest.approx(float(masked.detach()))
    masked.backward()
    assert logits.grad is not None and float(logits.grad[:, :, 0, :].abs().sum()) == 0.0
    assert float(logits.grad[:, :, 1:, :].abs().sum()) > 0.0
