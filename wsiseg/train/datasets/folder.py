"""A folder of image/mask pairs with a class map, e.g. GlaS (0 background, 255 gland).

Expected layout, flat::

    <data-dir>/images/<name>.png|jpg|tif     RGB images
    <data-dir>/masks/<name>.png              8-bit mask values (``labels/`` is accepted instead of masks/)
    <data-dir>/masks/<name>.geojson          or: QuPath/GeoJSON annotations (.geojson, .json, .geojson.gz)
    <data-dir>/classes.yaml                  class map (or pass ``class_map``; see below)

or split into ``<data-dir>/train/{images,masks}`` and ``<data-dir>/test/{images,masks}``.

Class map (YAML or JSON; :func:`wsiseg.train.datasets.classmap.read_class_map`)::

    classes:
      - {name: background, value: 0, color: [255, 255, 255]}
      - {name: gland, value: 255, color: [200, 0, 0]}
    ignore: [128]          # optional: values meaning "unlabelled"

A mask value the class map does not name is an error. Images are resized from ``source_mpp`` to ``mpp``
when both are given (um/px; e.g. GlaS is ~0.62 um/px at 20x) and cut into ``patch_size`` patches with the
overlap spread evenly.

GeoJSON ground truth (e.g. QuPath "Export objects as GeoJSON" per image): polygons in the image's own
(full-resolution) pixel coordinates whose classification names are class names of the class map (its
``value`` entries are then unused); pixels no object covers are unlabelled (``ignore_index``), objects of
an unknown classification are an error (:class:`~wsiseg.errors.ClassMismatchError`), unclassified ones are
skipped, where objects overlap the later one in the file wins. A pixel belongs to a polygon when its centre
lies inside it; with ``mpp``/``source_mpp`` the polygons are rasterised directly at the target resolution.
PNG and GeoJSON masks may be mixed in one folder.

Splits: ``val`` = ``val_fraction`` of the (training) images chosen with ``seed``;
``train`` = the rest; ``test`` = ``test/`` (only in the split layout); ``all`` = every image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.classes import ClassList
from wsiseg.errors import DatasetError, option
from wsiseg.train.datasets.base import (
    IMAGE_SUFFIXES,
    LabelFn,
    MaskReader,
    PatchDataset,
    PatchRef,
    Split,
    cached_decode,
    cut_patches,
    finish_dataset,
    image_size,
    lut_label_fn,
    pair_files,
    read_resized,
    resized_size,
    split_groups,
)
from wsiseg.train.datasets.classmap import read_class_map

CLASS_MAP_NAMES = ("classes.yaml", "classes.yml", "classes.json")


#: Suffixes of GeoJSON ground-truth files in masks/ (gzip is detected by content).
GEOJSON_SUFFIXES = (".geojson", ".json", ".geojson.gz", ".json.gz")


def geojson_stem(path: Path) -> str | None:
    """``<name>`` of a GeoJSON mask file ``<name>.geojson[.gz]``/``<name>.json[.gz]``, else None."""
    lower = path.name.lower()
    for suffix in GEOJSON_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def _pairs(root: Path) -> list[tuple[str, Path, Path]]:
    mask_dir = root / "masks"
    if not mask_dir.is_dir() and (root / "labels").is_dir():
        mask_dir = root / "labels"
    geojson = ({stem: p for p in mask_dir.iterdir() if (stem := geojson_stem(p)) is not None}
               if mask_dir.is_dir() else {})
    if not geojson:
        return pair_files(root / "images", mask_dir)
    images = [p for p in sorted((root / "images").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES] \
        if (root / "images").is_dir() else []
    pngs = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    both = sorted(set(geojson) & set(pngs))
    if both:
        raise DatasetError(f"{mask_dir} holds both a raster and a GeoJSON mask for {both[0]}; keep one")
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {root / 'images'}")
    missing = [p.name for p in images if p.stem not in geojson and p.stem not in pngs]
    if missing:
        raise DatasetError(f"{len(missing)} image(s) in {root / 'images'} have no mask (.png or .geojson) "
                           f"in {mask_dir}, e.g. {missing[0]}")
    return [(p.stem, p, geojson.get(p.stem) or pngs[p.stem]) for p in images]


def _geojson_reader(classes: ClassList) -> MaskReader:
    """Reads a patch source's mask: GeoJSON files rasterised at the target resolution, others decoded."""

    def read(ref: PatchRef) -> np.ndarray:
        if geojson_stem(ref.mask_path) is None:
            return read_resized(ref.mask_path, ref.scale, True)

        def rasterise() -> np.ndarray:
            from wsiseg.io.geojson_read import geojson_to_labels

            w0, h0 = image_size(ref.image_path)
            w, h = resized_size(w0, h0, ref.scale)
            return geojson_to_labels(ref.mask_path, classes, w, h, downsample=(w0 / w, h0 / h))

        return cached_decode(ref.mask_path, ref.scale, True, rasterise)

    return read


def _label_fn(lut_fn: LabelFn) -> LabelFn:
    """Raster masks go through the class map's look-up table; GeoJSON rasters already hold class indices."""

    def apply(raw: np.ndarray, path: Path) -> np.ndarray:
        return raw if geojson_stem(path) is not None else lut_fn(raw, path)

    return apply


def folder_dataset(data_dir: Path, split: Split = Split.TRAIN, *, patch_size: int = 512,
                   mpp: float | None = None, source_mpp: float | None = None, val_fraction: float = 0.2,
                   seed: int = 0, class_map: Path | None = None, **unused: Any) -> PatchDataset:
    """The folder data set in ``data_dir`` (layout in the module docstring)."""
    data_dir = Path(data_dir)
    if class_map is None:
        found = [data_dir / n for n in CLASS_MAP_NAMES if (data_dir / n).is_file()]
        if not found:
            raise DatasetError(f"no class map: put classes.yaml in {data_dir} or pass {option('class_map')} "
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
    patches = cut_patches([(s, img, msk, scale) for s, img, msk in pairs], patch_size)
    return finish_dataset("folder", patches, split, data_dir, classes, patch_size,
                          _label_fn(lut_label_fn(lut, known)), mpp, mask_reader=_geojson_reader(classes))
