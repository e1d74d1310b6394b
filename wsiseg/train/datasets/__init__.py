"""Training/evaluation data sets: a plain registry of builder functions by name.

Every builder is ``builder(data_dir, split, *, patch_size, mpp, val_fraction, seed, **options) ->
PatchDataset``; a :class:`PatchDataset` is a lazy sequence of ``(image uint8 (P,P,3), label uint8 (P,P))``
carrying a :class:`~wsiseg.classes.ClassList`. Layouts are documented in each module and docs/datasets.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsiseg.errors import DatasetError
from wsiseg.train.datasets.base import PatchDataset, PatchRef, Split, patch_starts
from wsiseg.train.datasets.bcss import bcss_dataset
from wsiseg.train.datasets.crag import crag_dataset
from wsiseg.train.datasets.folder import folder_dataset

DATASETS: dict[str, Callable[..., PatchDataset]] = {
    "bcss": bcss_dataset,
    "crag": crag_dataset,
    "folder": folder_dataset,
}


def build_dataset(name: str, data_dir: Path | str, split: Split | str = Split.TRAIN,
                  **options: Any) -> PatchDataset:
    """Build data set ``name`` (``bcss``, ``crag``, ``folder``) from ``data_dir``; options: see builder."""
    if name not in DATASETS:
        raise DatasetError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    try:
        split = Split(split)
    except ValueError as exc:
        choices = ", ".join(s.value for s in Split)
        raise DatasetError(f"unknown split {split!r}; choose one of {choices}") from exc
    if not Path(data_dir).is_dir():
        raise DatasetError(f"data folder {data_dir} not found")
    options = {k: v for k, v in options.items() if v is not None}
    return DATASETS[name](Path(data_dir), split, **options)


__all__ = ["DATASETS", "PatchDataset", "PatchRef", "Split", "build_dataset", "patch_starts"]
