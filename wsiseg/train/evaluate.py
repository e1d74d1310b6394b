"""Evaluation of a model on a data set: micro and per-class Dice/IoU, the paper's numbers, confusion matrix.

Uses the same :class:`~wsiseg.train.metrics.ConfusionMatrix` as training validation; the paper's numbers
(:class:`~wsiseg.train.metrics.PaperScores`) come from that matrix too. Memory is bounded by ``batch_size``
patches; time is measured per image (model prediction only, excluding file reading).

:func:`evaluate_with` is the one loop over a data set (reading, scoring, timing, the report); the
prediction step is pluggable, so SAM-Path (:func:`evaluate`) and the vanilla-SAM baselines
(:mod:`wsiseg.baselines`) are scored by the same code.

Two ways of counting (:class:`Scoring`): ``PATCHES`` scores every patch on its own, so where the patches of
an image overlap, those pixels count once per patch (as the reference code scores BCSS's overlapping
patch files); ``IMAGES`` predicts all patches of a source file, averages their class probabilities where
they overlap and scores the file's pixels once each (the whole-image Dice usual for GlaS-style data).
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from wsiseg.classes import ClassList
from wsiseg.errors import ClassMismatchError, ConfigError, DatasetError, OutputError, option
from wsiseg.model import Predictor
from wsiseg.train.datasets import PatchDataset
from wsiseg.train.metrics import ConfusionMatrix, PaperConvention, PaperScores, SegmentationScores


class Scoring(str, enum.Enum):
    """How pixels are counted: once per patch that holds them, or once per source image (module docstring)."""

    PATCHES = "patches"
    IMAGES = "images"


class ScoredSamples(Protocol):
    """What :func:`evaluate_with` reads of a data set: ``(image uint8 (H, W, 3), labels uint8 (H, W))``
    samples of one size per batch (a :class:`PatchDataset`'s patches, or whole source files one at a time)."""

    name: str
    classes: ClassList
    patch_size: int
    mpp: float | None

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...

    def sample_id(self, index: int) -> str: ...


@dataclass
class EvaluationReport:
    """Scores of one model on one data set split, with timing."""

    scores: SegmentationScores
    images: int
    seconds_per_image: float
    dataset: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    paper: PaperScores | None = None
    #: more top-level JSON keys from other prediction methods (e.g. ``method`` of a vanilla-SAM baseline)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "dataset": self.dataset,
            "model": self.model,
            "images": self.images,
            "seconds_per_image": self.seconds_per_image,
            "metrics_note": "micro = over all labelled pixels of the data set; per_class/macro = per class "
                            "over the data set, macro = mean over classes; 'paper' = the reference code's "
                            "own computation (see its note)",
            **self.scores.to_dict(),
        }
        if self.paper is not None:
            out["paper"] = self.paper.to_dict()
        return {**out, **self.extra}

    def write_json(self, path: Path | str) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def format(self) -> str:
        per_image = self.dataset.get("scoring") == Scoring.IMAGES.value
        head = (f"{self.images} images, {self.seconds_per_image:.3f} s/image "
                f"({self.dataset.get('name', '?')}, split {self.dataset.get('split', '?')}"
                f"{', each image pixel counted once' if per_image else ''})")
        text = head + "\n" + self.scores.format_table()
        if self.paper is not None:
            p = self.paper
            iou_name = "IoU (= gland recall)" if p.convention is PaperConvention.GLAND else "IoU"
            text += (f"\n\nthe paper's numbers ({p.convention.value} convention, torchmetrics 0.11.4 as in "
                     f"the reference code): Dice {p.dice:.4f}  {iou_name} {p.iou:.4f}  Dice_Bal "
                     f"{p.dice_macro:.4f}  IOU_Jaccard_Bal {p.iou_macro:.4f}  F1 {p.f1:.4f}")
        return text


#: The pluggable prediction step of :func:`evaluate_with`: ``(images uint8 (N, P, P, 3), labels uint8
#: (N, P, P), dataset indices) -> (class indices (N, P, P), model seconds spent on the batch)``. The labels
#: and indices are there for methods prompted from the ground truth (vanilla SAM with one dot per
#: instance); the seconds are the method's own model time (no file reading, no prompt computation).
BatchLabeller = Callable[[np.ndarray, np.ndarray, list[int]], tuple[np.ndarray, float]]


def dataset_for(predictor: Predictor, dataset: str, data_dir: str | Path, split: str, *,
                patch_size: int | None = None, mpp: float | None = None, whole_image: bool | None = None,
                **options: Any) -> PatchDataset:
    """The ``split`` of a data set as ``predictor`` is scored on it: patches of ``patch_size`` pixels
    (default: the model's tile size) at ``mpp`` um/px (default: the model's), or whole images when
    ``whole_image`` (default: as the model was trained, when it was trained on this data set with
    whole images). ``options`` go to :func:`wsiseg.train.datasets.build_dataset`."""
    from wsiseg.train.datasets import build_dataset

    if whole_image is None:
        recipe = _training_recipe(predictor)
        whole_image = bool(recipe.get("whole_image", False)) and dataset == recipe.get("dataset")
    return build_dataset(dataset, data_dir, split, patch_size=patch_size or predictor.tile_size,
                         mpp=None if whole_image else (mpp if mpp is not None else predictor.mpp),
                         whole_image=whole_image or None, **options)


def _training_recipe(predictor: Predictor) -> dict[str, Any]:
    """The recipe a model was trained with, as its checkpoint records it (empty when it records none)."""
    trained = predictor.provenance().get("trained")
    training = trained.get("training") if isinstance(trained, dict) else None
    recipe = training.get("recipe") if isinstance(training, dict) else None
    return recipe if isinstance(recipe, dict) else {}


def paper_convention(dataset_name: str) -> PaperConvention:
    """The reference code's metric set-up for a data set: CRAG's leaves background out, others none."""
    return PaperConvention.GLAND if dataset_name == "crag" else PaperConvention.MULTICLASS


def evaluate(predictor: Predictor, dataset: PatchDataset, *, batch_size: int = 4,
             save_predictions: Path | str | None = None, split: str = "", progress: bool = True,
             paper: PaperConvention | None = None, scoring: Scoring = Scoring.PATCHES) -> EvaluationReport:
    """Predict every patch of ``dataset`` with ``predictor`` and score it against the labels.

    ``scoring``: count pixels per patch or per source image (:class:`Scoring`; a whole-image data set
    has one sample per image already and takes only ``PATCHES``). ``save_predictions``: a folder
    receiving one colour PNG per scored sample (class colours of the class list). ``paper``: the
    convention of the paper's numbers (default: :func:`paper_convention` of the data set). Raises
    :class:`ClassMismatchError` when the model and the data set have different class counts.
    """
    model = f"the model ({', '.join(predictor.classes.names)}), for the {dataset.name} data set,"
    dataset.classes.require_count(len(predictor.classes), model)
    scoring = Scoring(scoring)
    if scoring is Scoring.IMAGES:
        return _evaluate_images(predictor, dataset, batch_size=batch_size, save_predictions=save_predictions,
                                split=split, progress=progress, paper=paper)

    def predict_labels(tiles: np.ndarray, labels: np.ndarray, indices: list[int]) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        pred = predictor.predict(tiles).argmax(axis=1).astype(np.uint8)
        return pred, time.perf_counter() - t0

    report = evaluate_with(predict_labels, dataset, model=predictor.provenance(), batch_size=batch_size,
                           save_predictions=save_predictions, split=split, progress=progress, paper=paper)
    report.dataset["scoring"] = scoring.value
    return report


class _SourceFiles:
    """The source files of a patch data set as samples: ``(image (H, W, 3), labels (H, W))`` each, at the
    data set's resolution; :attr:`members` lists the patches cut from each."""

    def __init__(self, data: PatchDataset) -> None:
        self.data = data
        self.members = data.files()
        self.name, self.classes = data.name, data.classes
        self.patch_size, self.mpp = data.patch_size, data.mpp

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.data.source(self.members[index][0])

    def sample_id(self, index: int) -> str:
        return self.data.patches[self.members[index][0]].image_path.stem


def _evaluate_images(predictor: Predictor, dataset: PatchDataset, *, batch_size: int,
                     save_predictions: Path | str | None, split: str, progress: bool,
                     paper: PaperConvention | None) -> EvaluationReport:
    """:func:`evaluate` with :attr:`Scoring.IMAGES`: one prediction per source file, from its patches."""
    if dataset.whole_image:
        raise ConfigError("per-image scoring is for data sets cut into patches; this one already has one "
                          f"sample per image ({option('whole_image', flag=True)})")
    files = _SourceFiles(dataset)

    def predict_file(images: np.ndarray, labels: np.ndarray, indices: list[int]) -> tuple[np.ndarray, float]:
        probs, spent = stitched_probs(predictor, dataset, files.members[indices[0]],
                                      (int(labels.shape[1]), int(labels.shape[2])),
                                      batch_size)
        return probs.argmax(axis=0)[None].astype(np.uint8), spent

    report = evaluate_with(predict_file, files, model=predictor.provenance(), batch_size=1,
                           save_predictions=save_predictions, split=split, progress=progress, paper=paper)
    report.dataset.update(scoring=Scoring.IMAGES.value, images=len(files), patches=len(dataset))
    return report


def stitched_probs(predictor: Predictor, dataset: PatchDataset, members: list[int], size: tuple[int, int],
                   batch_size: int) -> tuple[np.ndarray, float]:
    """Class probabilities ``(k, H, W)`` float32 of one source file of ``size = (H, W)`` pixels at the data
    set's resolution: each pixel's mean over the patches ``members`` (indices into ``dataset``, all cut
    from that file) that cover it; with the model's seconds spent. Padding beyond the file is dropped."""
    h, w = size
    p = dataset.patch_size
    total = np.zeros((len(predictor.classes), h, w), dtype=np.float32)
    hits = np.zeros((h, w), dtype=np.float32)
    spent = 0.0
    for start in range(0, len(members), batch_size):
        chunk = members[start:start + batch_size]
        tiles = np.stack([dataset[i][0] for i in chunk])
        t0 = time.perf_counter()
        probs = predictor.predict(tiles)
        spent += time.perf_counter() - t0
        for i, prob in zip(chunk, probs, strict=True):
            ref = dataset.patches[i]
            ph, pw = min(p, h - ref.y_t), min(p, w - ref.x_t)
            total[:, ref.y_t:ref.y_t + ph, ref.x_t:ref.x_t + pw] += prob[:, :ph, :pw]
            hits[ref.y_t:ref.y_t + ph, ref.x_t:ref.x_t + pw] += 1.0
    if not hits.all():
        path = dataset.patches[members[0]].image_path
        raise DatasetError(f"per-image scoring needs every patch of {path.name}; this split holds only some")
    return total / hits, spent


def evaluate_with(predict_labels: BatchLabeller, dataset: ScoredSamples, *, model: dict[str, Any],
                  batch_size: int = 4, save_predictions: Path | str | None = None, split: str = "",
                  progress: bool = True, paper: PaperConvention | None = None) -> EvaluationReport:
    """Score ``predict_labels`` (see :data:`BatchLabeller`) on every sample of ``dataset``.

    ``model``: the provenance recorded in the report. ``save_predictions``: a folder receiving one colour
    PNG per sample (class colours of the class list). Seconds per image = the sum of the seconds
    ``predict_labels`` reports over the number of patches. ``paper``: as :func:`evaluate` (the crag
    convention needs two classes, background first).
    """
    paper = paper_convention(dataset.name) if paper is None else PaperConvention(paper)
    if paper is PaperConvention.GLAND and len(dataset.classes) != 2:
        raise ClassMismatchError(f"the crag convention of the paper's numbers needs two classes (background, "
                                 f"gland), the data set has {len(dataset.classes)}")
    out_dir = Path(save_predictions) if save_predictions is not None else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    palette = np.array(dataset.classes.colors, dtype=np.uint8)
    cm = ConfusionMatrix(dataset.classes)
    seconds = 0.0
    bar = tqdm(total=len(dataset), desc=f"evaluating {dataset.name}", unit="image", disable=not progress)
    for start in range(0, len(dataset), batch_size):
        idx = list(range(start, min(start + batch_size, len(dataset))))
        pairs = [dataset[i] for i in idx]
        tiles = np.stack([p[0] for p in pairs])
        labels = np.stack([p[1] for p in pairs])
        pred, spent = predict_labels(tiles, labels, idx)
        seconds += spent
        cm.update(pred, labels)
        if out_dir is not None:
            for i, p in zip(idx, pred, strict=True):
                path = out_dir / f"{dataset.sample_id(i)}.png"  # CRAG ids are "<part>/<name>_..."
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(palette[p]).save(path)
        bar.update(len(idx))
    bar.close()
    return EvaluationReport(
        scores=cm.scores(),
        paper=PaperScores.from_confusion(cm.matrix, paper),
        images=len(dataset),
        seconds_per_image=seconds / max(len(dataset), 1),
        dataset={"name": dataset.name, "split": split, "patches": len(dataset),
                 "patch_size": dataset.patch_size, "mpp": dataset.mpp, "classes": dataset.classes.names},
        model=model,
    )
