"""Segmentation metrics, accumulated over a data set through a confusion matrix (memory: k x k integers).

One implementation serves training validation and ``wsiseg evaluate``. Definitions (REFERENCE section 4):

- *micro* Dice = ``2 * sum_c TP_c / (2 * sum_c TP_c + sum_c FP_c + sum_c FN_c)`` and micro IoU =
  ``sum_c TP_c / sum_c (TP_c + FP_c + FN_c)`` over all labelled pixels of the data set; this is how the
  SAM-Path paper computes its numbers (torchmetrics micro averaging with an ignore index). With one label per
  pixel, micro Dice equals pixel accuracy over labelled pixels and micro IoU = acc / (2 - acc).
- *per-class* Dice/IoU of class ``c`` from ``TP_c, FP_c, FN_c`` over the whole data set; *macro* = their mean
  over the classes that occur in the ground truth or the prediction (a class absent from both is NaN and
  left out of the mean).

Pixels whose label equals ``ignore_index`` are excluded from every count.

:class:`PaperScores` gives, from the same confusion matrix, the numbers exactly as the SAM-Path reference
code computes them (torchmetrics 0.11.4 with its arguments; REFERENCE.md section 9), for putting next to the
paper's Table 1. They differ from the standard ones above in two places: the macro IoU divides by one class
more than exists (classes absent from both count as 0), and under the CRAG convention the background class
is ignored, so "Dice" is the gland Dice and "IoU" is the gland *recall* TP / (TP + FN), not an IoU.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from wsiseg.classes import ClassList


class ConfusionMatrix:
    """A running ``(k, k)`` int64 confusion matrix; rows = ground-truth class, columns = predicted class."""

    def __init__(self, classes: ClassList) -> None:
        self.classes = classes
        self.num_classes = len(classes)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, preds: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add predicted class indices ``preds`` and labels ``target`` of one shape (e.g. (N, H, W)).

        ``target`` may hold :attr:`ClassList.ignore_index` (excluded); ``preds`` must be in ``0..k-1``.
        """
        p = torch.as_tensor(preds).reshape(-1).to(torch.int64)
        t = torch.as_tensor(target).reshape(-1).to(torch.int64)
        if p.shape != t.shape:
            raise ValueError(f"preds and target differ in size: {tuple(p.shape)} vs {tuple(t.shape)}")
        k = self.num_classes
        valid = t != self.classes.ignore_index
        p, t = p[valid], t[valid]
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
            raise ValueError(f"label values outside 0..{k - 1} (and not the ignore index)")
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= k):
            raise ValueError(f"predicted classes outside 0..{k - 1}")
        counts = torch.bincount((t * k + p).cpu(), minlength=k * k)
        self.matrix += counts.numpy().reshape(k, k)

    def scores(self) -> SegmentationScores:
        return SegmentationScores.from_confusion(self.matrix, self.classes)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


@dataclass(frozen=True)
class SegmentationScores:
    """Scores of one data set (see the module docstring for the definitions)."""

    class_names: tuple[str, ...]
    micro_dice: float
    micro_iou: float
    dice: tuple[float, ...]
    iou: tuple[float, ...]
    macro_dice: float
    macro_iou: float
    pixels: int
    confusion: tuple[tuple[int, ...], ...]

    @classmethod
    def from_confusion(cls, matrix: np.ndarray, classes: ClassList) -> SegmentationScores:
        m = matrix.astype(np.float64)
        tp = np.diag(m)
        fp = m.sum(axis=0) - tp
        fn = m.sum(axis=1) - tp
        dice = tuple(_ratio(2 * tp[c], 2 * tp[c] + fp[c] + fn[c]) for c in range(len(tp)))
        iou = tuple(_ratio(tp[c], tp[c] + fp[c] + fn[c]) for c in range(len(tp)))
        present_d = [d for d in dice if not math.isnan(d)]
        present_i = [v for v in iou if not math.isnan(v)]
        return cls(
            class_names=tuple(classes.names),
            micro_dice=_ratio(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum()),
            micro_iou=_ratio(tp.sum(), tp.sum() + fp.sum() + fn.sum()),
            dice=dice,
            iou=iou,
            macro_dice=float(np.mean(present_d)) if present_d else math.nan,
            macro_iou=float(np.mean(present_i)) if present_i else math.nan,
            pixels=int(matrix.sum()),
            confusion=tuple(tuple(int(v) for v in row) for row in matrix),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form; NaN becomes ``None``."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {
            "micro_dice": clean(self.micro_dice),
            "micro_iou": clean(self.micro_iou),
            "macro_dice": clean(self.macro_dice),
            "macro_iou": clean(self.macro_iou),
            "per_class": {
                name: {"dice": clean(d), "iou": clean(i)}
                for name, d, i in zip(self.class_names, self.dice, self.iou, strict=True)
            },
            "labelled_pixels": self.pixels,
            "confusion_matrix": {
                "rows": "ground truth",
                "columns": "prediction",
                "classes": list(self.class_names),
                "counts": [list(r) for r in self.confusion],
            },
        }

    def format_table(self) -> str:
        """A plain-text table: per-class rows, then macro and micro rows, then the confusion matrix."""
        width = max(12, *(len(n) for n in self.class_names))
        lines = [f"{'class':<{width}}  {'Dice':>7}  {'IoU':>7}"]
        for name, d, i in zip(self.class_names, self.dice, self.iou, strict=True):
            lines.append(f"{name:<{width}}  {d:7.4f}  {i:7.4f}")
        lines.append(f"{'macro (mean)':<{width}}  {self.macro_dice:7.4f}  {self.macro_iou:7.4f}")
        lines.append(f"{'micro (paper)':<{width}}  {self.micro_dice:7.4f}  {self.micro_iou:7.4f}")
        lines.append("")
        lines.append("confusion matrix (rows: ground truth, columns: prediction; pixels)")
        cell = max(10, *(len(n) for n in self.class_names))
        lines.append(" " * width + "".join(f"  {n:>{cell}}" for n in self.class_names))
        for name, row in zip(self.class_names, self.confusion, strict=True):
            lines.append(f"{name:<{width}}" + "".join(f"  {v:>{cell}d}" for v in row))
        return "\n".join(lines)


class PaperConvention(str, enum.Enum):
    """Which of the reference code's metric set-ups applies (its ``ignored_classes_metric``)."""

    MULTICLASS = "bcss"  #: no class left out (BCSS)
    GLAND = "crag"  #: class 0 (background) left out of predictions and targets (CRAG: background vs gland)


def _div(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0  # torchmetrics' zero_division=0


@dataclass(frozen=True)
class PaperScores:
    """The reference code's five metrics (its MetricCollection keys in brackets), from a confusion matrix.

    The reference scores ``K = k + 2`` torchmetrics classes: its target is ``class + 1`` (0 = unlabelled,
    whose predictions it also sets to 0) and one class more than its ``k + 1`` channels. With ``M`` that
    ``K x K`` matrix and its row 0 dropped (``M'``):

    - ``dice`` [Dice]: micro over classes ``1..``: ``2 tp / (2 tp + fp + fn)`` on ``M`` (BCSS: pixel
      accuracy over labelled pixels; CRAG: the gland Dice);
    - ``dice_macro`` [Dice_Bal]: the mean per-class Dice over classes ``1..`` that occur in ``M``;
    - ``iou`` [IOU_Jaccard]: micro Jaccard on ``M'`` (BCSS: ``acc / (2 - acc)``; CRAG: gland recall);
    - ``iou_macro`` [IOU_Jaccard_Bal]: per-class Jaccard on ``M'`` averaged over ALL ``K - 1`` classes;
    - ``f1`` [F1]: accuracy over ``M'``.

    Under :attr:`PaperConvention.GLAND` class 0 (background) is moved to 0 in both prediction and target
    first. Everything is 0 when nothing is left to score (torchmetrics' zero division).
    """

    convention: PaperConvention
    dice: float
    dice_macro: float
    iou: float
    iou_macro: float
    f1: float

    @classmethod
    def from_confusion(cls, matrix: np.ndarray, convention: PaperConvention) -> PaperScores:
        k = matrix.shape[0]
        big = k + 2
        m = np.zeros((big, big), dtype=np.float64)
        m[1:k + 1, 1:k + 1] = matrix
        if convention is PaperConvention.GLAND:
            m[0, :] += m[1, :]
            m[:, 0] += m[:, 1]
            m[1, :] = 0
            m[:, 1] = 0
        tp = np.diag(m)[1:]
        fp = m.sum(axis=0)[1:] - tp
        fn = m.sum(axis=1)[1:] - tp
        present = (tp + fp + fn) > 0
        per_dice = [_div(2 * t, 2 * t + p + n) for t, p, n in zip(tp, fp, fn, strict=True)]
        dice_macro = float(np.mean([d for d, ok in zip(per_dice, present, strict=True) if ok])) \
            if present.any() else 0.0
        mp = m.copy()
        mp[0, :] = 0  # pixels whose target is 0 are dropped
        tp2 = np.diag(mp)[1:]
        union = mp.sum(axis=0)[1:] + mp.sum(axis=1)[1:] - tp2
        return cls(
            convention=convention,
            dice=_div(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum()),
            dice_macro=dice_macro,
            iou=_div(tp2.sum(), union.sum()),
            iou_macro=float(np.mean([_div(t, u) for t, u in zip(tp2, union, strict=True)])),
            f1=_div(tp2.sum(), mp.sum()),
        )

    def to_dict(self) -> dict[str, Any]:
        note = ("the SAM-Path reference code's numbers (torchmetrics 0.11.4, its arguments), comparable with "
                "the paper's Table 1")
        if self.convention is PaperConvention.GLAND:
            note += ("; background is ignored, so 'dice' is the gland Dice and 'iou' is the gland RECALL "
                     "TP/(TP+FN), not an IoU (see per_class.gland.iou for the true gland IoU)")
        else:
            note += "; 'dice' = pixel accuracy over labelled pixels, 'iou' = dice / (2 - dice)"
        return {"convention": self.convention.value, "dice": self.dice, "iou": self.iou,
                "dice_macro": self.dice_macro, "iou_macro": self.iou_macro, "f1": self.f1, "note": note}
