"""CRAG (Graham et al. 2019): colorectal adenocarcinoma gland instance masks at 20x, as background vs gland.

Expected layout (the official v2 release)::

    <data-dir>/train/Images/<name>.png       RGB, about 1512x1516 px at 20x (~0.5 um/px)
    <data-dir>/train/Annotation/<name>.png   instance ids (0 = background, 1..n = glands; 8 or 16 bit)
    <data-dir>/test/Images/, <data-dir>/test/Annotation/   the same for the official test images

(``Overlay/`` folders are not used.) Every instance id > 0 becomes class ``gland``, 0 becomes
``background``.

Two ways to cut samples: ``whole_image=True`` (the paper's set-up, ``pipelines/crag.yaml``): one sample per
image, the whole image resized to ``patch_size x patch_size`` (1536; the model input is that resized
again to 1024, and loss and metrics are computed at 1536); or patches: images resized from ``source_mpp``
(0.5) to ``mpp`` when ``mpp`` is given and cut into ``patch_size`` patches with the overlap spread evenly.

Splits: ``test`` = ``test/``; ``val`` = ``val_fraction`` (20%) of ``train/`` images chosen with ``seed``;
``train`` = the rest; ``all`` = ``train/`` and ``test/``. ``split_file`` (an ``img_id,fold`` CSV of image
names, e.g. the reference code's ``CRAG_cv.csv``: fold -1 = the 40 test images, 0 = validation, 1-4 =
training) assigns images to splits instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.classes import ClassList
from wsiseg.errors import DatasetError
from wsiseg.train.datasets.base import (
    PatchDataset,
    PatchRef,
    Split,
    cut_patches,
    finish_dataset,
    pair_files,
    select_by_split_file,
    split_groups,
    whole_images,
)

CLASSES = ClassList.from_names(["background", "gland"], [(255, 255, 255), (200, 0, 0)])


def _instances_to_gland(raw: np.ndarray, path: Path) -> np.ndarray:
    return (raw > 0).astype(np.uint8)


def _instance_ids(raw: np.ndarray, path: Path) -> np.ndarray:
    """The instance ids themselves (:meth:`PatchDataset.instances`; vanilla SAM's dot prompts)."""
    return raw.astype(np.int32)


def crag_dataset(data_dir: Path, split: Split = Split.TRAIN, *, patch_size: int = 1024,
                 mpp: float | None = None, source_mpp: float = 0.5, val_fraction: float = 0.2, seed: int = 0,
                 whole_image: bool = False, split_file: Path | None = None, **unused: Any) -> PatchDataset:
    """The CRAG data set in ``data_dir`` (layout in the module docstring)."""
    data_dir = Path(data_dir)
    if not (data_dir / "train" / "Images").is_dir() and not (data_dir / "test" / "Images").is_dir():
        raise DatasetError(f"{data_dir} is not a CRAG folder: expected train/Images, train/Annotation, "
                           "test/Images, test/Annotation")
    if whole_image and mpp is not None:
        raise DatasetError("CRAG whole_image mode resizes every image to patch_size; do not set mpp")
    scale = 1.0 if mpp is None else source_mpp / mpp

    def part(name: str) -> list[tuple[str, Path, Path, float]]:
        if not (data_dir / name / "Images").is_dir():
            return []
        return [(f"{name}/{stem}", img, msk, scale)
                for stem, img, msk in pair_files(data_dir / name / "Images", data_dir / name / "Annotation")]

    def cut(pairs: list[tuple[str, Path, Path, float]]) -> list[PatchRef]:
        return whole_images(pairs) if whole_image else cut_patches(pairs, patch_size)

    patches: list[PatchRef]
    if split_file is not None:
        patches = select_by_split_file(cut(part("train") + part("test")), split, split_file,
                                       lambda p: p.group.split("/", 1)[1])
    elif split is Split.TEST:
        patches = cut(part("test"))
    elif split is Split.ALL:
        patches = cut(part("train") + part("test"))
    else:
        train = part("train")
        chosen = split_groups([g for g, _, _, _ in train], split, val_fraction, seed)
        patches = cut([p for p in train if p[0] in chosen])
    return finish_dataset("crag", patches, split, data_dir, CLASSES, patch_size, _instances_to_gland,
                          source_mpp if whole_image else mpp, whole_image=whole_image,
                          instance_fn=_instance_ids)
