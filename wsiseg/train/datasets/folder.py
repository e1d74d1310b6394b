"""A folder of image/mask pairs with a class map, e.g. GlaS (0 background, 255 gland).

Expected layout, flat::

    <data-dir>/images/<name>.png|jpg|tif     RGB images
    <data-dir>/masks/<name>.png              8-bit mask values (``labels/`` is accepted instead of masks/)
    <data-dir>/classes.yaml                  class map (or pass ``class_map``; see below)

or split into ``<data-dir>/train/{images,masks}`` and ``<data-dir>/test/{images,masks}``.

Class map (YAML or JSON; :func:`wsiseg.train.datasets.classmap.read_class_map`)::

    classes:
      - {name: background, value: 0, color: [255, 255, 255]}
      - {name: gland, value: 255, color: [200, 0, 0]}
    ignore: [128]          # optional: values meaning "unlabelled"

A mask value the class map does not name is an error. Images are resized from ``source_mpp`` to ``mpp``
when both are given (um/px; e.g. GlaS is ~0.62 um/px at 20x) and cut into ``patch_size`` patches with the
overlap spread evenly. Splits: ``val`` = ``val_fraction`` of the (training) images chosen with ``seed``;
``train`` = the rest; ``test`` = ``test/`` (only in the split layout); ``all`` = every image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsiseg.errors import DatasetError
from wsiseg.train.datasets.base import (
    PatchDataset,
    Split,
    cut_patches,
    lut_label_fn,
    pair_files,
    split_groups,
)
from wsiseg.train.datasets.classmap import read_class_map

CLASS_MAP_NAMES = ("classes.yaml", "classes.yml", "classes.json")


def _pairs(root: Path) -> list[tuple[str, Path, Path]]:
    mask_dir = root / "masks"
    if not mask_dir.is_dir() and (root / "labels").is_dir():
        mask_dir = root / "labels"
    return pair_files(root / "images", mask_dir)


def folder_dataset(data_dir: Path, split: Split = Split.TRAIN, *, patch_size: int = 512,
                   mpp: float | None = None, source_mpp: float | None = None, val_fraction: float = 0.2,
                   seed: int = 0, class_map: Path | None = None, **unused: Any) -> PatchDataset:
    """The folder data set in ``data_dir`` (layout in the module docstring)."""
    data_dir = Path(data_dir)
    if class_map is None:
        found = [data_dir / n for n in CLASS_MAP_NAMES if (data_dir / n).is_file()]
        if not found:
            raise DatasetError(f"no class map: put classes.yaml in {data_dir} or pass --class-map FILE "
                               "(e.g. pipelines/glas-classes.yaml)")
        class_map = found[0]
    classes, lut, known = read_class_map(class_map)
    if mpp is not None and source_mpp is None:
        raise DatasetError("folder data set: mpp is set but source_mpp (the images' own um/px) is not")
    scale = 1.0 if mpp is None or source_mpp is None else source_mpp / mpp
    split_layout = (data_dir / "train" / "images").is_dir()
    if split is Split.TEST:
        if not (data_dir / "test" / "images").is_dir():
            raise DatasetError(f"{data_dir} has no test/images folder; use split 'val' or 'all'")
        pairs = _pairs(data_dir / "test")
    else:
        base = _pairs(data_dir / "train") if split_layout else _pairs(data_dir)
        if split is Split.ALL:
            pairs = base + (_pairs(data_dir / "test") if (data_dir / "test" / "images").is_dir() else [])
        else:
            chosen = split_groups([s for s, _, _ in base], split, val_fraction, seed)
            pairs = [p for p in base if p[0] in chosen]
    if not pairs:
        raise DatasetError(f"the {split.value} split of {data_dir} is empty")
    patches = cut_patches([(s, img, msk, scale) for s, img, msk in pairs], patch_size)
    return PatchDataset("folder", patches, classes, patch_size, lut_label_fn(lut, known), mpp)
