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
"""

from __future__ import annotations

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

    def reset(self) -> None:
        self.matrix[:] = 0

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

    def merge(self, other: ConfusionMatrix) -> None:
        self.matrix += other.matrix

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
