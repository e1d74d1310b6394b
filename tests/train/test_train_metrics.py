"""Metrics agree with torchmetrics and with hand-worked examples; ignored pixels are excluded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

from wsiseg.classes import ClassList
from wsiseg.train.metrics import ConfusionMatrix

torch.set_num_threads(1)


def test_hand_worked_example() -> None:
    classes = ClassList.from_names(["a", "b"])
    target = np.array([[0, 0, 1, 1], [0, 255, 1, 255]], dtype=np.uint8)
    preds = np.array([[0, 1, 1, 1], [0, 0, 0, 1]], dtype=np.uint8)
    cm = ConfusionMatrix(classes)
    cm.update(preds, target)
    # labelled pixels: (0,0)a->a (0,1)a->b (0,2)b->b (0,3)b->b (1,0)a->a (1,2)b->a
    assert cm.matrix.tolist() == [[2, 1], [1, 2]]
    s = cm.scores()
    assert s.pixels == 6
    assert s.micro_dice == pytest.approx(4 / 6)  # accuracy over labelled pixels
    assert s.micro_iou == pytest.approx(4 / (4 + 2 + 2))
    assert s.dice == pytest.approx((4 / 6, 4 / 6))
    assert s.iou == pytest.approx((0.5, 0.5))
    assert s.macro_dice == pytest.approx(4 / 6)


def test_absent_class_is_nan_and_left_out_of_macro() -> None:
    classes = ClassList.from_names(["a", "b", "c"])
    cm = ConfusionMatrix(classes)
    cm.update(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]))
    s = cm.scores()
    assert math.isnan(s.dice[2]) and math.isnan(s.iou[2])
    assert s.dice[0] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert s.dice[1] == pytest.approx(2 / 3)
    assert s.macro_dice == pytest.approx((0.8 + 2 / 3) / 2)
    assert s.to_dict()["per_class"]["c"]["dice"] is None


@pytest.mark.parametrize("k", [2, 5])
def test_agrees_with_torchmetrics_on_random_inputs(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    classes = ClassList.from_names([f"c{i}" for i in range(k)])
    f1_micro = MulticlassF1Score(num_classes=k, average="micro", ignore_index=255)
    jac_micro = MulticlassJaccardIndex(num_classes=k, average="micro", ignore_index=255)
    f1_none = MulticlassF1Score(num_classes=k, average="none", ignore_index=255)
    jac_none = MulticlassJaccardIndex(num_classes=k, average="none", ignore_index=255)
    cm = ConfusionMatrix(classes)
    for _ in range(3):  # accumulate over several batches like a data set
        target = torch.randint(0, k, (4, 17, 23), generator=gen)
        target[torch.rand(target.shape, generator=gen) < 0.2] = 255
        # correlated predictions so that scores are not trivial
        preds = torch.where(torch.rand(target.shape, generator=gen) < 0.6, target.clamp(max=k - 1),
                            torch.randint(0, k, target.shape, generator=gen))
        cm.update(preds, target)
        for m in (f1_micro, jac_micro, f1_none, jac_none):
            m.update(preds, target)
    s = cm.scores()
    assert s.micro_dice == pytest.approx(float(f1_micro.compute()), abs=1e-6)
    assert s.micro_iou == pytest.approx(float(jac_micro.compute()), abs=1e-6)
    assert s.dice == pytest.approx(f1_none.compute().tolist(), abs=1e-6)
    assert s.iou == pytest.approx(jac_none.compute().tolist(), abs=1e-6)
    # micro Dice == pixel accuracy over labelled pixels, micro IoU == acc / (2 - acc)
    acc = np.trace(cm.matrix) / cm.matrix.sum()
    assert s.micro_dice == pytest.approx(acc)
    assert s.micro_iou == pytest.approx(acc / (2 - acc))


def test_rejects_out_of_range_labels() -> None:
    cm = ConfusionMatrix(ClassList.from_names(["a", "b"]))
    with pytest.raises(ValueError, match="label values"):
        cm.update(np.array([0, 1]), np.array([0, 7]))


def test_table_lists_micro_and_macro() -> None:
    cm = ConfusionMatrix(ClassList.from_names(["background", "gland"]))
    cm.update(np.array([0, 1, 1, 1]), np.array([0, 1, 1, 0]))
    table = cm.scores().format_table()
    assert "micro (paper)" in table and "macro (mean)" in table and "gland" in table
