"""BCSS (Amgad et al. 2019): 151 H&E breast-cancer ROIs from TCGA-BRCA with 22-code masks.

Expected layout (the official release)::

    <data-dir>/rgbs_colorNormalized/TCGA-<site>-<case>-DX1_xmin<..>_ymin<..>_MPP-0.2500.png   (or images/)
    <data-dir>/masks/<same name>.png        8-bit codes 0..21 (0 = outside ROI)

Classes (default grouping, REFERENCE section 3): tumor = {1, 19, 20}, stroma = {2}, inflammatory =
{3, 10, 11}, necrosis = {4}, others = every other labelled code; code 0 is ignored (``ignore_index``).
A mapping file (YAML/JSON) overrides the grouping::

    classes:            # class name -> codes; codes not listed are ignored
      tumor: [1, 19, 20]
      stroma: [2]
    colors:             # optional, RGB per class
      tumor: [200, 0, 0]

ROIs are resized from their own resolution (``_MPP-x`` in the file name, else 0.25 um/px) to ``mpp``
(default 0.25) and cut into ``patch_size`` patches (default 1024) with the overlap spread evenly; a patch's
id is the reference code's ``<ROI name>_<y0>_<x0>`` (offsets in pixels at ``mpp``, y first).

Splits, by default by ROI: ``test`` = ROIs of the official test institutions (TCGA site codes OL, LL, E2,
EW, GM, S3); ``val`` = ``val_fraction`` (20%) of the other ROIs, chosen with ``seed``; ``train`` = the
rest; ``all`` = every ROI. Patches of one ROI overlap and share its tissue, so a split by ROI keeps
validation free of training pixels. ``split_file`` (an ``img_id,fold`` CSV of patch ids, e.g. the
reference code's ``BCSS_cv.csv``: fold -1 test, 0 val, 1-4 train) reproduces the reference's patch folds
instead; those are per patch, so most ROIs straddle training and validation there (validation scores are
then optimistic).
"""

from __future__ import annotations

import re
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
    lut_label_fn,
    pair_files,
    select_by_split_file,
    split_groups,
)
from wsiseg.train.datasets.classmap import read_mapping_file

#: TCGA tissue-source-site codes of the official BCSS test split.
TEST_SITES = frozenset({"OL", "LL", "E2", "EW", "GM", "S3"})

#: BCSS mask codes.
CODES = {
    0: "outside_roi", 1: "tumor", 2: "stroma", 3: "lymphocytic_infiltrate", 4: "necrosis_or_debris",
    5: "glandular_secretions", 6: "blood", 7: "exclude", 8: "metaplasia_NOS", 9: "fat", 10: "plasma_cells",
    11: "other_immune_infiltrate", 12: "mucoid_material", 13: "normal_acinus_or_duct", 14: "lymphatics",
    15: "undetermined", 16: "nerve", 17: "skin_adnexa", 18: "blood_vessel", 19: "angioinvasion", 20: "dcis",
    21: "other",
}

#: The default five-class grouping (class name -> codes).
DEFAULT_GROUPS: dict[str, list[int]] = {
    "tumor": [1, 19, 20],
    "stroma": [2],
    "inflammatory": [3, 10, 11],
    "necrosis": [4],
    "others": [c for c in range(1, 22) if c not in (1, 19, 20, 2, 3, 10, 11, 4)],
}
DEFAULT_COLORS: dict[str, tuple[int, int, int]] = {
    "tumor": (200, 0, 0), "stroma": (150, 200, 150), "inflammatory": (30, 30, 200),
    "necrosis": (255, 200, 0), "others": (160, 160, 160),
}

_MPP_RE = re.compile(r"_MPP-([0-9.]+)")


def site_code(name: str) -> str:
    """The TCGA tissue-source-site code of a BCSS file name (``TCGA-OL-...`` -> ``OL``)."""
    if not name.startswith("TCGA-") or len(name) < 7:
        raise DatasetError(f"BCSS file name {name!r} does not start with TCGA-<site>-")
    return name[5:7]


def source_mpp(name: str, default: float = 0.25) -> float:
    """Resolution recorded in a BCSS file name (``_MPP-0.2500``), else ``default`` (um/px)."""
    m = _MPP_RE.search(name)
    return float(m.group(1).rstrip(".")) if m else default


def grouping_lut(groups: dict[str, list[int]], colors: dict[str, tuple[int, int, int]] | None = None,
                 ignore_index: int = 255) -> tuple[ClassList, np.ndarray]:
    """A class list and a 256-entry code -> class index table; unlisted codes map to ``ignore_index``."""
    names = list(groups)
    palette = [(colors or {}).get(n, DEFAULT_COLORS.get(n, (128, 128, 128))) for n in names]
    classes = ClassList.from_names(names, palette, ignore_index=ignore_index)
    lut = np.full(256, ignore_index, dtype=np.uint8)
    for idx, name in enumerate(names):
        for code in groups[name]:
            if not 0 <= int(code) <= 255:
                raise DatasetError(f"BCSS mapping: code {code} of class {name!r} is outside 0..255")
            if lut[int(code)] != ignore_index:
                raise DatasetError(f"BCSS mapping: code {code} is assigned to two classes")
            lut[int(code)] = idx
    return classes, lut


def patch_id(roi: str, x_t: int, y_t: int, patch_size: int, scale: float) -> str:
    """The reference code's BCSS patch id ``<ROI name>_<y0>_<x0>``."""
    return f"{roi}_{y_t}_{x_t}"


def bcss_dataset(data_dir: Path, split: Split = Split.TRAIN, *, patch_size: int = 1024, mpp: float = 0.25,
                 val_fraction: float = 0.2, seed: int = 0, mapping: Path | None = None,
                 split_file: Path | None = None, **unused: Any) -> PatchDataset:
    """The BCSS data set in ``data_dir`` (layout in the module docstring)."""
    data_dir = Path(data_dir)
    image_dir = data_dir / "rgbs_colorNormalized"
    if not image_dir.is_dir():
        image_dir = data_dir / "images"
    if not image_dir.is_dir():
        raise DatasetError(f"{data_dir} is not a BCSS folder: expected rgbs_colorNormalized/ (or images/) "
                           "and masks/")
    pairs = pair_files(image_dir, data_dir / "masks")
    if mapping is not None:
        groups, colors = read_mapping_file(mapping)
        classes, lut = grouping_lut(groups, colors)
    else:
        classes, lut = grouping_lut(DEFAULT_GROUPS, DEFAULT_COLORS)
    lut[0] = classes.ignore_index  # code 0 (outside ROI) is never a class
    scaled = [(stem, img, msk, source_mpp(stem) / mpp) for stem, img, msk in pairs]
    patches: list[PatchRef]
    if split_file is not None:
        patches = select_by_split_file(cut_patches(scaled, patch_size, patch_id), split, split_file,
                                       lambda p: p.sample_id)
    else:
        test = {stem for stem, _, _ in pairs if site_code(stem) in TEST_SITES}
        if split is Split.TEST:
            chosen = test
        elif split is Split.ALL:
            chosen = {stem for stem, _, _ in pairs}
        else:
            chosen = split_groups([s for s, _, _ in pairs if s not in test], split, val_fraction, seed)
        patches = cut_patches([p for p in scaled if p[0] in chosen], patch_size, patch_id)
    return finish_dataset("bcss", patches, split, data_dir, classes, patch_size, lut_label_fn(lut), mpp)
