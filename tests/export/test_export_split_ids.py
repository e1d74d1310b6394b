"""Feature ids (stable per output, distinct between segmentations) and split tiles (bounded memory: a region
larger than a tile is written as pieces cut along tile borders, still exact and valid)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage
from shapely.geometry import shape

from wsiseg.errors import ConfigError
from wsiseg.export import export_geojson, vectorise_labels

from .conftest import CLASSES, OUT_MPP, make_label_map, make_probabilities
from .test_export_geojson import validate_qupath


def load(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def ids(path: Path) -> list[str]:
    return [f["id"] for f in load(path)["features"]]


# -- ids ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True])
def test_ids_stable_across_reexports_and_distinct_between_runs(make_segmentation: Callable[..., Path],
                                                                tmp_path: Path, split: bool) -> None:
    labels = make_label_map(160, 200, seed=2)[:96, :120].copy()
    probabilities = make_probabilities(labels)
    started = "2025-01-01T10:00:00"
    first = make_segmentation(labels, probabilities, attrs={"run_id": "8f2c1a", "started": started})
    a, b = tmp_path / "a.geojson", tmp_path / "b.geojson"
    export_geojson(first, a, split_regions=split, block_size=16, split_size=64)
    export_geojson(first, b, split_regions=split, block_size=48, split_size=64)
    assert sorted(ids(a)) == sorted(ids(b)) and len(set(ids(a))) == len(ids(a))  # re-export: same ids
    # the same slide (same sha256_head) segmented again: a new run id, new ids
    second = make_segmentation(labels, probabilities, attrs={"run_id": "41d7e9", "started": started})
    c = tmp_path / "c.geojson"
    export_geojson(second, c, split_regions=split, block_size=16, split_size=64)
    assert not set(ids(a)) & set(ids(c))


def test_ids_of_outputs_without_run_id_use_start_time(make_segmentation: Callable[..., Path],
                                                      tmp_path: Path) -> None:
    """Outputs written before run ids: the start time (with the slide) tells two segmentations apart."""
    labels = make_label_map(160, 200, seed=2)[:64, :80].copy()
    probabilities = make_probabilities(labels)
    out = {}
    for name, started in (("a", "2024-05-01T09:00:00"), ("b", "2024-05-01T09:00:00"),
                          ("c", "2024-06-11T17:30:00")):
        seg = make_segmentation(labels, probabilities, attrs={"started": started})
        export_geojson(seg, tmp_path / f"{name}.geojson", split_regions=True)
        out[name] = ids(tmp_path / f"{name}.geojson")
    assert out["a"] == out["b"]
    assert not set(out["a"]) & set(out["c"])


# -- split tiles -------------------------------------------------------------------------------------------


def _pieces(labels: np.ndarray, split_size: int, block_size: int) -> list[tuple[int, int, int, bool, Any]]:
    """(value, first y, first x, split, geometry) of every piece, checking that tiles come in order."""
    out = []
    tiles: list[tuple[int, int]] = []
    for batch in vectorise_labels(labels, block_size=block_size, split_size=split_size):
        if not tiles or tiles[-1] != batch.tile:
            assert batch.tile not in tiles  # tile by tile: a tile's regions are all out before the next's
            tiles.append(batch.tile)
        for i in range(len(batch)):
            out.append((int(batch.values[i]), int(batch.first_pixel[i, 0]), int(batch.first_pixel[i, 1]),
                        bool(batch.split[i]), batch.geometries[i]))
    assert tiles == sorted(tiles)
    return out


def test_split_tiles_cut_regions_along_tile_borders() -> None:
    labels = make_label_map(160, 200, seed=3)
    labels[40:44, :] = 2  # a band through every tile column
    size = 48
    pieces = _pieces(labels, size, 16)
    other = {p[:3]: p for p in _pieces(labels, size, 24)}  # another block size: the same pieces
    assert other.keys() == {p[:3] for p in pieces}
    assert all(other[p[:3]][3] == p[3] and other[p[:3]][4].equals(p[4]) for p in pieces)
    components = {v: ndimage.label(labels == v)[0] for v in (1, 2, 3)}
    for value, fy, fx, split, geometry in pieces:
        ty, tx = fy // size * size, fx // size * size
        x0, y0, x1, y1 = geometry.bounds
        assert tx <= x0 and x1 <= tx + size and ty <= y0 and y1 <= ty + size  # inside its tile
        assert geometry.is_valid
        # split <=> its connected region (in the whole map) reaches into another tile
        ys, xs = np.nonzero(components[value] == components[value][fy, fx])
        assert split == (len(set(zip((ys // size).tolist(), (xs // size).tolist(), strict=True))) > 1)
    for value in (1, 2, 3):  # pieces = connected components of the class within each tile
        mask = labels == value
        expected = sum(ndimage.label(mask[y:y + size, x:x + size])[1]
                       for y in range(0, labels.shape[0], size) for x in range(0, labels.shape[1], size))
        mine = [p[4] for p in pieces if p[0] == value]
        assert len(mine) == expected
        drawn = rasterio.features.rasterize([(g, 1) for g in mine], out_shape=labels.shape, fill=0,
                                            transform=Affine.identity(), dtype=np.uint8)
        assert np.array_equal(drawn.astype(bool), mask)  # exact: not a pixel lost or added


@pytest.mark.parametrize("split_regions", [False, True])
def test_split_export_is_exact_valid_and_one_feature_per_class_and_tile(
        make_segmentation: Callable[..., Path], label_map: np.ndarray, tmp_path: Path,
        split_regions: bool) -> None:
    seg = make_segmentation(label_map, slide_mpp=OUT_MPP)
    out = tmp_path / "split.geojson"
    result = export_geojson(seg, out, split_size=64, block_size=32, split_regions=split_regions,
                            check_validity=True)
    data = load(out)
    validate_qupath(data)
    assert result.split_size == 64 and result.n_split > 0 and result.n_repaired == 0
    assert data["properties"]["wsiseg"]["split_size"] == 64
    by_class: dict[str, list[Any]] = {}
    for feature in data["features"]:
        geometry = shape(feature["geometry"])
        assert geometry.is_valid, shapely.is_valid_reason(geometry)  # pieces of one feature share no edge
        by_class.setdefault(feature["properties"]["classification"]["name"], []).append(geometry)
    for index, name in enumerate(CLASSES.names):
        drawn = rasterio.features.rasterize([(g, 1) for g in by_class[name]], out_shape=label_map.shape,
                                            fill=0, transform=Affine.identity(), dtype=np.uint8)
        assert np.array_equal(drawn.astype(bool), label_map == index + 1)
        area = sum(f["properties"]["measurements"]["Area um^2"] for f in data["features"]
                   if f["properties"]["classification"]["name"] == name)
        assert area == pytest.approx((label_map == index + 1).sum() * OUT_MPP**2, abs=0.01)
    if not split_regions:  # one MultiPolygon per class present in each of the 4 x 5 tiles
        present = sum(len(set(np.unique(label_map[y:y + 64, x:x + 64])) - {0})
                      for y in range(0, 240, 64) for x in range(0, 300, 64))
        assert result.n_features == present
    whole = export_geojson(seg, tmp_path / "whole.geojson", split_size=0)
    assert whole.n_features == 3 and whole.split_size == 0 and whole.n_split == 0


def test_min_area_keeps_pieces_of_split_regions(make_segmentation: Callable[..., Path],
                                                 tmp_path: Path) -> None:
    """A big region that pokes 1 pixel into the next tile keeps that piece; small whole regions go."""
    labels = np.full((64, 64), 1, dtype=np.uint8)
    labels[2:30, 2:32] = 2  # 840 px of tumour in the first tile ...
    labels[20, 32] = 2  # ... and one pixel past its border at x = 32
    labels[50:52, 50:52] = 3  # a 4 px necrosis region
    seg = make_segmentation(labels, slide_mpp=OUT_MPP)
    out = tmp_path / "min.geojson"
    export_geojson(seg, out, split_regions=True, split_size=32, min_area_um2=10 * OUT_MPP**2,
                   classes=["tumour", "necrosis"])
    features = load(out)["features"]
    tumour = sorted(f["properties"]["measurements"]["Area um^2"] for f in features
                    if f["properties"]["classification"]["name"] == "tumour")
    assert tumour == pytest.approx([1 * OUT_MPP**2, 840 * OUT_MPP**2])
    assert not [f for f in features if f["properties"]["classification"]["name"] == "necrosis"]


def test_split_size_is_checked(segmentation: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="split size"):
        export_geojson(segmentation, tmp_path / "x.geojson", split_size=8)
    with pytest.raises(ValueError, match="split_size"):
        list(vectorise_labels(np.zeros((4, 4), dtype=np.uint8), split_size=-1))
