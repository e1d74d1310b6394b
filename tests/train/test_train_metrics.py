"""Metrics agree with torchmetrics and with hand-worked examples; ignored pixels are excluded."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

from wsiseg.classes import ClassList
from wsiseg.train.metrics import ConfusionMatrix, PaperConvention, PaperScores

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


PAPER_CASES = Path(__file__).parent / "data" / "paper_metrics_torchmetrics_0114.json"


def _paper_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(PAPER_CASES.read_text())["cases"]
    return cases


@pytest.mark.parametrize("case", _paper_cases(), ids=lambda c: c["name"])
def test_paper_scores_equal_torchmetrics_0_11_4(case: dict[str, Any]) -> None:
    """The reference code's five metrics, as torchmetrics 0.11.4 computed them with the reference's
    arguments (expected values generated once by 0.11.4 itself), from wsiseg's confusion matrix.

    Each batch holds the model's argmax over the real classes and the data set's target (0 = unlabelled;
    BCSS 1..5, CRAG 1 background 2 gland), cases with ignored pixels and absent classes included."""
    k = 5 if case["config"] == "bcss" else 2
    cm = ConfusionMatrix(ClassList.from_names([f"c{i}" for i in range(k)]))
    for batch in case["batches"]:
        target = np.array(batch["target_raw"])
        cm.update(np.array(batch["argmax_real"]), np.where(target == 0, 255, target - 1))
    convention = PaperConvention.MULTICLASS if case["config"] == "bcss" else PaperConvention.GLAND
    got = PaperScores.from_confusion(cm.matrix, convention)
    expected = case["expected"]
    assert got.dice == pytest.approx(expected["Dice"], abs=1e-6)
    assert got.dice_macro == pytest.approx(expected["Dice_Bal"], abs=1e-6)
    assert got.iou == pytest.approx(expected["IOU_Jaccard"], abs=1e-6)
    assert got.iou_macro == pytest.approx(expected["IOU_Jaccard_Bal"], abs=1e-6)
    assert got.f1 == pytest.approx(expected["F1"], abs=1e-6)


def test_paper_crag_iou_is_gland_recall_and_bcss_dice_is_accuracy() -> None:
    """The identities behind Table 1 (REFERENCE section 9), by hand on a 2-class confusion matrix."""
    m = np.array([[50, 10],   # background: 50 right, 10 called gland (FP)
                  [5, 35]])   # gland: 5 missed (FN), 35 right (TP)
    crag = PaperScores.from_confusion(m, PaperConvention.GLAND)
    assert crag.dice == pytest.approx(2 * 35 / (2 * 35 + 10 + 5))
    assert crag.iou == pytest.approx(35 / (35 + 5)) == crag.f1  # recall, not the IoU 35 / 50
    assert crag.iou_macro == pytest.approx(crag.iou / 3)
    bcss = PaperScores.from_confusion(m, PaperConvention.MULTICLASS)
    acc = 85 / 100
    assert bcss.dice == pytest.approx(acc) and bcss.iou == pytest.approx(acc / (2 - acc))
