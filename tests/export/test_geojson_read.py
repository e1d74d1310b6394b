"""GeoJSON in: QuPath-style files -> ROI masks and label maps; bad files -> one-line GeoJSONError."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wsiseg.classes import ClassList
from wsiseg.errors import ClassMismatchError, DatasetError, GeoJSONError
from wsiseg.export import export_geojson
from wsiseg.io.geojson_read import geojson_to_labels, geojson_to_mask

from .conftest import CLASSES, OUT_MPP, SLIDE_MPP

DOWNSAMPLE = OUT_MPP / SLIDE_MPP


def square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def qupath_feature(geometry: dict[str, Any], name: str | None) -> dict[str, Any]:
    props: dict[str, Any] = {"objectType": "annotation", "isLocked": False}
    if name is not None:
        props["classification"] = {"name": name, "color": [200, 0, 0]}
    return {"type": "Feature", "id": "6c1f2cf6-7e05-4f55-a2a6-2c47d8f0b0a1", "geometry": geometry,
            "properties": props}


def write(path: Path, data: Any) -> Path:
    text = json.dumps(data)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def expected_ring_mask() -> np.ndarray:
    """20 x 30 mask (downsample 2): a ring [2,18) with hole [6,14) holding an island [8,12), and a
    MultiPolygon of two squares to the right."""
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:18, 2:18] = True
    mask[6:14, 6:14] = False
    mask[8:12, 8:12] = True
    mask[2:5, 20:23] = True
    mask[10:14, 24:28] = True
    return mask


def ring_features() -> list[dict[str, Any]]:
    ring = {"type": "Polygon", "coordinates": [square(4, 4, 36, 36), square(12, 12, 28, 28)]}
    island = {"type": "Polygon", "coordinates": [square(16, 16, 24, 24)]}
    pair = {"type": "MultiPolygon", "coordinates": [[square(40, 4, 46, 10)], [square(48, 20, 56, 28)]]}
    return [qupath_feature(ring, "tumour"), qupath_feature(island, "stroma"),
            qupath_feature(pair, "necrosis")]


@pytest.mark.parametrize("form", ["collection", "list", "gz"])
def test_mask_polygons_with_holes_islands_multipolygons(tmp_path: Path, form: str) -> None:
    features = ring_features()
    if form == "collection":
        path = write(tmp_path / "rois.geojson", {"type": "FeatureCollection", "features": features})
    elif form == "list":  # older QuPath exports: a bare JSON list of features
        path = write(tmp_path / "rois.json", features)
    else:
        path = write(tmp_path / "rois.geojson.gz", {"type": "FeatureCollection", "features": features})
    mask = geojson_to_mask(path, 30, 20, 2.0)
    assert mask.dtype == bool and mask.shape == (20, 30)
    assert np.array_equal(mask, expected_ring_mask())


def test_single_feature_and_bare_geometry(tmp_path: Path) -> None:
    geometry = {"type": "Polygon", "coordinates": [square(0, 0, 10, 4)]}
    for data in (geometry, qupath_feature(geometry, None)):
        mask = geojson_to_mask(write(tmp_path / "one.geojson", data), 8, 4, (2.0, 1.0))
        expected = np.zeros((4, 8), dtype=bool)
        expected[0:4, 0:5] = True
        assert np.array_equal(mask, expected)


def test_labels_by_classification(tmp_path: Path) -> None:
    path = write(tmp_path / "gt.geojson", {"type": "FeatureCollection", "features": ring_features()})
    labels = geojson_to_labels(path, CLASSES, 30, 20, 2.0)
    expected = np.full((20, 30), CLASSES.ignore_index, dtype=np.uint8)
    truth = expected_ring_mask()
    expected[2:18, 2:18] = CLASSES.index("tumour")
    expected[6:14, 6:14] = CLASSES.ignore_index  # the ring's hole is unlabelled ...
    expected[8:12, 8:12] = CLASSES.index("stroma")  # ... except the island drawn in it
    expected[2:5, 20:23] = expected[10:14, 24:28] = CLASSES.index("necrosis")
    assert np.array_equal(labels, expected)
    assert np.array_equal(labels != CLASSES.ignore_index, truth)


def test_unknown_classification(tmp_path: Path) -> None:
    fat = {"type": "Polygon", "coordinates": [square(0, 0, 2, 2)]}
    features = [*ring_features(), qupath_feature(fat, "fat")]
    path = write(tmp_path / "gt.geojson", {"type": "FeatureCollection", "features": features})
    with pytest.raises(ClassMismatchError, match="fat"):
        geojson_to_labels(path, CLASSES, 30, 20, 2.0)
    labels = geojson_to_labels(path, CLASSES, 30, 20, 2.0, ignore_unknown=True)
    assert labels[0, 0] == CLASSES.ignore_index


def test_round_trip_of_exported_segmentation(segmentation: Path, label_map: np.ndarray,
                                             tmp_path: Path) -> None:
    height, width = label_map.shape
    for split in (False, True):
        out = tmp_path / f"seg-{split}.geojson.gz"
        export_geojson(segmentation, out, split_regions=split, block_size=64)
        mask = geojson_to_mask(out, width, height, DOWNSAMPLE)
        assert np.array_equal(mask, label_map > 0)
        labels = geojson_to_labels(out, CLASSES, width, height, DOWNSAMPLE)
        expected = np.where(label_map > 0, label_map.astype(np.int64) - 1, CLASSES.ignore_index)
        assert np.array_equal(labels, expected)


def test_wide_ignore_index(tmp_path: Path) -> None:
    classes = ClassList.from_names(["tumour"], ignore_index=-100)
    geometry = {"type": "Polygon", "coordinates": [square(0, 0, 2, 2)]}
    path = write(tmp_path / "a.geojson", qupath_feature(geometry, "tumour"))
    labels = geojson_to_labels(path, classes, 3, 3)
    assert labels.dtype == np.int32
    assert labels.tolist() == [[0, 0, -100], [0, 0, -100], [-100, -100, -100]]


@pytest.mark.parametrize(("content", "message"), [
    (b'{"type": "FeatureCollection", "features": [', "not valid JSON"),
    (b"\x1f\x8b\x08\x00garbage", "cannot read GeoJSON"),
    (b'{"hello": 1}', "not GeoJSON"),
    (b'{"type": "FeatureCollection", "features": 3}', "no 'features' list"),
    (b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},'
     b' "geometry": {"type": "Point", "coordinates": [1, 2]}}]}', "no Polygon"),
    (b'{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[1, 2]]}}',
     "malformed geometry"),
    (b'{"type": "FeatureCollection", "features": ["x"]}', "not a GeoJSON object"),
])
def test_bad_files_raise_one_line_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_bytes(content)
    with pytest.raises(GeoJSONError, match=message) as info:
        geojson_to_mask(path, 10, 10, 1.0)
    assert isinstance(info.value, DatasetError)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GeoJSONError, match="not found"):
        geojson_to_mask(tmp_path / "nope.geojson", 10, 10, 1.0)


def test_self_intersecting_polygon_is_repaired(tmp_path: Path) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [8, 6], [8, 0], [0, 6], [0, 0]]]}
    mask = geojson_to_mask(write(tmp_path / "bow.geojson", bowtie), 8, 6, 1.0)
    y, x = np.mgrid[0:6, 0:8] + 0.5  # pixel centres (none lies on an edge)
    left = (y > 0.75 * x) & (y < 6 - 0.75 * x)  # make_valid splits the bow tie into two triangles
    right = (y < 0.75 * x) & (y > 6 - 0.75 * x)
    assert np.array_equal(mask, left | right) and mask.sum() > 10
