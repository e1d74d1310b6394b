"""The paper's vanilla-SAM baselines, scored by SAM-Path's own evaluation (:func:`evaluate_with`).

- ``sam-points``: one positive dot per ground-truth instance (:mod:`.instances`), each predicted on its
  own; the union of the masks is the object (gland) class, as in the paper ("we assume all the objects
  that the vanilla SAM segmented are glands"). With ``post_process`` the paper's rule drops every mask
  covering more than half of the image first (:mod:`.postprocess`).
- ``sam-everything``: SAM's automatic mask generator. Its masks carry no class: the union of all masks
  is scored against the object class, which is NOT a class prediction (the report says so); instance
  numbers (masks per image, the best IoU any mask reaches with each ground-truth instance) come with it.

Both score through :class:`~wsiseg.train.metrics.ConfusionMatrix` and
:class:`~wsiseg.train.evaluate.EvaluationReport` like SAM-Path, and time the model only: the image
embedding plus every prompt of the image (sam-points), or the whole generator (sam-everything); reading
files and computing prompts are not timed. The report's ``extra`` adds ``method``, ``instances`` and
``per_image`` (sample id, seconds, counts) keys.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.baselines.instances import (
    best_match_iou,
    check_binary,
    ground_truth_instances,
    instance_iou,
    prompt_points,
)
from wsiseg.baselines.postprocess import MAX_IMAGE_FRACTION, oversized, union_label
from wsiseg.baselines.segmenter import MaskGenerator, PointPromptSegmenter
from wsiseg.train.datasets import PatchDataset
from wsiseg.train.evaluate import EvaluationReport, evaluate_with

POST_PROCESS_RULE = (f"every predicted instance mask covering more than {MAX_IMAGE_FRACTION:g} of the image "
                     "is dropped (the paper's post-processing)")


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def evaluate_sam_points(segmenter: PointPromptSegmenter, dataset: PatchDataset, *,
                        post_process: bool = False, save_predictions: Path | str | None = None,
                        split: str = "", progress: bool = True) -> EvaluationReport:
    """Vanilla SAM with one dot per ground-truth instance of ``dataset`` (two classes; see module doc)."""
    check_binary(dataset, "sam-points")
    per_image: list[dict[str, Any]] = []
    ious: list[float] = []

    def predict_labels(images: np.ndarray, labels: np.ndarray,
                       indices: list[int]) -> tuple[np.ndarray, float]:
        out = np.zeros(labels.shape, dtype=np.uint8)
        seconds = 0.0
        for k, (image, label, index) in enumerate(zip(images, labels, indices, strict=True)):
            instances = ground_truth_instances(dataset, index, label)
            ids, points = prompt_points(instances)
            t0 = time.perf_counter()
            masks = segmenter.segment(image, points)
            spent = time.perf_counter() - t0
            drop = oversized(masks) if post_process else np.zeros(len(masks), dtype=bool)
            kept = masks[~drop]
            out[k] = union_label(kept, label.shape)
            own = instance_iou(instances, ids, masks)
            own[drop] = 0.0
            ious.extend(own.tolist())
            per_image.append({"sample_id": dataset.sample_id(index), "seconds": spent,
                              "instances": len(ids), "dropped_masks": int(drop.sum()),
                              "mean_instance_iou": _mean(own.tolist())})
            seconds += spent
        return out, seconds

    report = evaluate_with(predict_labels, dataset, model=segmenter.provenance(), batch_size=1,
                           save_predictions=save_predictions, split=split, progress=progress)
    label = "SAM, one dot per instance" + (" + post-processing" if post_process else "")
    report.extra = {
        "method": {
            "name": "sam-points",
            "label": label,
            "post_process": post_process,
            "post_process_rule": POST_PROCESS_RULE if post_process else None,
            "class_metrics_apply": True,
            "scores_are": "every predicted instance mask counts as the object class "
                          f"'{dataset.classes.names[1]}' (the paper's assumption for vanilla SAM)",
            "prompts": "one positive dot per ground-truth instance: its pixel farthest from the instance "
                       "border (ties: first in row-major order); instances = the mask's instance ids, or "
                       "the 4-connected components of a binary mask, within the patch",
            "timing": "seconds per image = SAM's image embedding + one decoder call per dot (model only)",
        },
        "instances": {
            "total": len(ious),
            "dropped_masks": sum(p["dropped_masks"] for p in per_image),
            "mean_instance_iou": _mean(ious),
            "note": "IoU of each dot's mask with its own ground-truth instance (a dropped mask counts 0)",
        },
        "per_image": per_image,
    }
    return report


def evaluate_sam_everything(generator: MaskGenerator, dataset: PatchDataset, *, post_process: bool = False,
                            save_predictions: Path | str | None = None, split: str = "",
                            progress: bool = True) -> EvaluationReport:
    """SAM's "segment everything" on ``dataset`` (two classes): union of masks vs the object class."""
    check_binary(dataset, "sam-everything")
    per_image: list[dict[str, Any]] = []
    best: list[float] = []

    def predict_labels(images: np.ndarray, labels: np.ndarray,
                       indices: list[int]) -> tuple[np.ndarray, float]:
        out = np.zeros(labels.shape, dtype=np.uint8)
        seconds = 0.0
        for k, (image, label, index) in enumerate(zip(images, labels, indices, strict=True)):
            t0 = time.perf_counter()
            masks = generator.generate(image)
            spent = time.perf_counter() - t0
            drop = oversized(masks) if post_process else np.zeros(len(masks), dtype=bool)
            kept = masks[~drop]
            out[k] = union_label(kept, label.shape)
            instances = ground_truth_instances(dataset, index, label)
            matched = best_match_iou(instances, kept).tolist()
            best.extend(matched)
            per_image.append({"sample_id": dataset.sample_id(index), "seconds": spent,
                              "masks": len(kept), "dropped_masks": int(drop.sum()),
                              "instances": len(matched), "mean_best_iou": _mean(matched)})
            seconds += spent
        return out, seconds

    report = evaluate_with(predict_labels, dataset, model=generator.provenance(), batch_size=1,
                           save_predictions=save_predictions, split=split, progress=progress)
    obj = dataset.classes.names[1]
    report.extra = {
        "method": {
            "name": "sam-everything",
            "label": "SAM, segment everything" + (" + post-processing" if post_process else ""),
            "post_process": post_process,
            "post_process_rule": POST_PROCESS_RULE if post_process else None,
            "class_metrics_apply": False,
            "scores_are": f"NOT a class prediction: the union of all generated masks scored as '{obj}' "
                          f"against the '{obj}' ground truth; SAM's masks carry no class, so class metrics "
                          "do not apply",
            "timing": "seconds per image = the whole automatic mask generator (model only)",
        },
        "warning": "sam-everything: Dice/IoU below are foreground-union numbers, not class metrics",
        "instances": {
            "total": len(best),
            "masks_per_image": _mean([float(p["masks"]) for p in per_image]),
            "dropped_masks": sum(p["dropped_masks"] for p in per_image),
            "mean_best_iou": _mean(best),
            "note": "for each ground-truth instance the best IoU any generated mask reaches with it, "
                    "averaged over instances",
        },
        "per_image": per_image,
    }
    return report


def format_baseline(report: EvaluationReport) -> str:
    """The report's text (:meth:`EvaluationReport.format`) with the baseline's method and instance lines."""
    method = report.extra.get("method", {})
    inst = report.extra.get("instances", {})
    lines = [f"method: {method.get('label', '?')}", f"scores: {method.get('scores_are', '')}"]
    if method.get("post_process_rule"):
        lines.append(f"post-processing: {method['post_process_rule']}")
    facts = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in inst.items() if k != "note" and v is not None)
    if facts:
        lines.append(f"instances: {facts} ({inst.get('note', '')})")
    return "\n".join(lines) + "\n" + report.format()
