"""Fixtures for wsiseg.export: small OME-Zarr segmentations written with zarr directly, following the
layout contract of docs/architecture.md (wsiseg.infer), and label maps with known structure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from scipy import ndimage

from wsiseg.classes import ClassList

CLASSES = ClassList.from_names(["stroma", "tumour", "necrosis"])
SLIDE_MPP = 0.2527
OUT_MPP = 0.5


def write_segmentation(path: Path, labels: np.ndarray, probabilities: np.ndarray | None, *,
                       classes: ClassList = CLASSES, out_mpp: float = OUT_MPP, slide_mpp: float = SLIDE_MPP,
                       n_levels: int = 2, zarr_format: int = 2, chunk: int = 64,
                       slide: dict[str, Any] | None = None, attrs: dict[str, Any] | None = None) -> Path:
    """A wsiseg-style OME-Zarr: image ``0..n`` (c, y, x) uint8 probabilities, ``labels/classes/0..n``
    (y, x) uint8 labels (nearest-neighbour 2x pyramid), multiscales scales in um, root attrs ``wsiseg``.
    ``slide``: entries replacing or adding to ``wsiseg.slide`` (width0, height0, bounds, ...); ``attrs``:
    top-level ``wsiseg`` entries (run_id, started, ...)."""
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)  # type: ignore[arg-type]
    label_group = root.require_group("labels").require_group("classes")
    image_datasets: list[dict[str, Any]] = []
    label_datasets: list[dict[str, Any]] = []
    lab, prob = labels, probabilities
    for level in range(n_levels):
        scale = out_mpp * 2**level
        label_group.create_array(str(level), data=lab, chunks=(chunk, chunk))
        label_datasets.append({"path": str(level),
                               "coordinateTransformations": [{"type": "scale", "scale": [scale, scale]}]})
        if prob is not None:
            root.create_array(str(level), data=prob, chunks=(prob.shape[0], chunk, chunk))
        image_scale = [{"type": "scale", "scale": [1.0, scale, scale]}]
        image_datasets.append({"path": str(level), "coordinateTransformations": image_scale})
        lab = lab[::2, ::2]
        prob = None if prob is None else prob[:, ::2, ::2]
    space = [{"name": "y", "type": "space", "unit": "micrometer"},
             {"name": "x", "type": "space", "unit": "micrometer"}]
    image_ms = [{"version": "0.4", "name": "probabilities",
                 "axes": [{"name": "c", "type": "channel"}, *space], "datasets": image_datasets}]
    label_ms = [{"version": "0.4", "name": "classes", "axes": space, "datasets": label_datasets}]
    height, width = labels.shape
    slide_info: dict[str, Any] = {
        "path": "/slides/case-17.svs", "width0": round(width * out_mpp / slide_mpp),
        "height0": round(height * out_mpp / slide_mpp), "mpp": [slide_mpp, slide_mpp],
        "sha256_head": "feedc0ffee", **(slide or {})}
    meta: dict[str, Any] = {"version": "0.1.0", "slide": slide_info, "classes": classes.to_dict(),
                            "mpp": out_mpp, **(attrs or {})}
    colors = [{"label-value": i + 1, "rgba": [*c.color, 255]} for i, c in enumerate(classes)]
    label_attrs = {"multiscales": label_ms, "image-label": {"version": "0.4", "colors": colors}}
    if zarr_format == 2:
        root.attrs.update({"multiscales": image_ms, "wsiseg": meta})
        root["labels"].attrs.update({"labels": ["classes"]})
        label_group.attrs.update(label_attrs)
    else:
        root.attrs.update({"ome": {"version": "0.5", "multiscales": image_ms}, "wsiseg": meta})
        root["labels"].attrs.update({"ome": {"version": "0.5", "labels": ["classes"]}})
        label_group.attrs.update({"ome": {"version": "0.5", **label_attrs}})
    return path


def make_label_map(height: int = 240, width: int = 300, seed: int = 0) -> np.ndarray:
    """uint8 (y, x) map, values 0 (not analysed) and 1..3 (classes): smooth random regions plus a ring
    with a hole holding an island, a snake crossing many blocks, and a checkerboard of diagonal touches."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((height, width)), 3.0)
    labels = np.digitize(noise, np.quantile(noise, [0.15, 0.45, 0.75])).astype(np.uint8)
    labels[10:60, 10:60] = 2  # tumour ring ...
    labels[20:50, 20:50] = 1  # ... with a stroma hole ...
    labels[30:40, 30:40] = 2  # ... holding a tumour island
    labels[70:74, 5:290] = 3  # necrosis snake: a long band ...
    labels[70:200, 286:290] = 3  # ... down the right ...
    labels[196:200, 5:290] = 3  # ... and back: one U-shaped region over many blocks
    checker = (np.indices((12, 12)).sum(axis=0) % 2).astype(np.uint8)
    labels[100:112, 100:112] = np.where(checker == 1, 1, 3)
    labels[:4, :] = 0  # a not-analysed strip
    return labels


def make_probabilities(labels: np.ndarray, n_classes: int = 3, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n_classes, *labels.shape), dtype=np.uint8)


@pytest.fixture(scope="session")
def label_map() -> np.ndarray:
    return make_label_map()


@pytest.fixture(scope="session")
def probabilities(label_map: np.ndarray) -> np.ndarray:
    return make_probabilities(label_map)


@pytest.fixture(scope="session")
def segmentation(tmp_path_factory: pytest.TempPathFactory, label_map: np.ndarray,
                 probabilities: np.ndarray) -> Path:
    return write_segmentation(tmp_path_factory.mktemp("seg") / "out.zarr", label_map, probabilities)


@pytest.fixture
def make_segmentation(tmp_path: Path) -> Callable[..., Path]:
    def make(labels: np.ndarray, probabilities: np.ndarray | None = None, **kwargs: Any) -> Path:
        if probabilities is None:
            probabilities = make_probabilities(labels)
        return write_segmentation(tmp_path / "seg.zarr", labels, probabilities, **kwargs)
    return make
