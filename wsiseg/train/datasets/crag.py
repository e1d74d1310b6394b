"""CRAG (Graham et al. 2019): colorectal adenocarcinoma gland instance masks at 20x, as background vs gland.

Expected layout (the official v2 release)::

    <data-dir>/train/Images/<name>.png       RGB, about 1512x1516 px at 20x (~0.5 um/px)
    <data-dir>/train/Annotation/<name>.png   instance ids (0 = background, 1..n = glands; 8 or 16 bit)
    <data-dir>/test/Images/, <data-dir>/test/Annotation/   the same for the official test images

(``Overlay/`` folders are not used.) Every instance id > 0 becomes class ``gland``, 0 becomes
``background``. Images are resized from ``source_mpp`` (0.5) to ``mpp`` when ``mpp`` is given and cut into
``patch_size`` patches (default 1024) with the overlap spread evenly. Splits: ``test`` = ``test/``;
``val`` = ``val_fraction`` (20%) of ``train/`` images chosen with ``seed`` (by image); ``train`` = the
rest; ``all`` = ``train/`` and ``test/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.classes import ClassList
from wsiseg.errors import DatasetError
from wsiseg.train.datasets.base import PatchDataset, Split, cut_patches, pair_files, split_groups

CLASSES = ClassList.from_names(["background", "gland"], [(255, 255, 255), (200, 0, 0)])


def _instances_to_gland(raw: np.ndarray, path: Path) -> np.ndarray:
    return (raw > 0).astype(np.uint8)


def _instance_ids(raw: np.ndarray, path: Path) -> np.ndarray:
    """The instance ids themselves (:meth:`PatchDataset.instances`; vanilla SAM's dot prompts)."""
    return raw.astype(np.int32)


def crag_dataset(data_dir: Path, split: Split = Split.TRAIN, *, patch_size: int = 1024,
                 mpp: float | None = None, source_mpp: float = 0.5, val_fraction: float = 0.2, seed: int = 0,
                 **unused: Any) -> PatchDataset:
    """The CRAG data set in ``data_dir`` (layout in the module docstring)."""
    data_dir = Path(data_dir)
    if not (data_dir / "train" / "Images").is_dir() and not (data_dir / "test" / "Images").is_dir():
        raise DatasetError(f"{data_dir} is not a CRAG folder: expected train/Images, train/Annotation, "
                           "test/Images, test/Annotation")
    scale = 1.0 if mpp is None else source_mpp / mpp

    def part(name: str) -> list[tuple[str, Path, Path]]:
        return [(f"{name}/{stem}", img, msk)
                for stem, img, msk in pair_files(data_dir / name / "Images", data_dir / name / "Annotation")]

    if split is Split.TEST:
        pairs = part("test")
    elif split is Split.ALL:
        pairs = part("train") + part("test")
    else:
        train = part("train")
        chosen = split_groups([g for g, _, _ in train], split, val_fraction, seed)
        pairs = [p for p in train if p[0] in chosen]
    if not pairs:
        raise DatasetError(f"the CRAG {split.value} split in {data_dir} is empty")
    patches = cut_patches([(g, img, msk, scale) for g, img, msk in pairs], patch_size)
    return PatchDataset("crag", patches, CLASSES, patch_size, _instances_to_gland, mpp,
                        instance_fn=_instance_ids)
