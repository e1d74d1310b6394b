"""Coordinate frames and clipping: QuPath's bounds-cropped frame by default, OpenSlide's on request, every
geometry inside the slide (or its bounds), valid, with the clipped area and probability measured."""

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
from shapely.geometry import shape

from wsiseg.errors import ConfigError
from wsiseg.export import CoordinateFrame, SlideBounds, SlideFrame, export_geojson

from .conftest import CLASSES, make_label_map, make_probabilities

#: output grid of 1 um/px over a 0.25 um/px slide: 4 level-0 pixels per output pixel (the stride)
OUT_MPP, SLIDE_MPP, DS = 1.0, 0.25, 4.0


def load(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def odd_labels() -> np.ndarray:
    """61 x 83 labels (odd, every class on the right and bottom edges), a necrosis strip in the last
    column only (three quarters of it lie past the slide's edge below) and one in the last row."""
    labels = make_label_map(160, 200, seed=4)[:61, :83].copy()
    labels[:, 78:82] = 1
    labels[9, 82] = 1
    labels[10:20, 82] = 3
    labels[20:40, 82] = 2
    labels[59, 29:51] = 1
    labels[60, 29:51] = 1
    labels[60, 30:50] = 3
    return labels


def clipped_area_px(mask: np.ndarray, ds: float, rect: tuple[float, float, float, float]) -> float:
    """By hand: the level-0 area of the mask's pixel squares ``[x ds, (x+1) ds]`` inside ``rect``."""
    ys, xs = np.nonzero(mask)
    wx = np.clip(np.minimum((xs + 1) * ds, rect[2]) - np.maximum(xs * ds, rect[0]), 0, None)
    wy = np.clip(np.minimum((ys + 1) * ds, rect[3]) - np.maximum(ys * ds, rect[1]), 0, None)
    return float((wx * wy).sum())


def exact_region(mask: np.ndarray, ds: float, rect: tuple[float, float, float, float]) -> Any:
    """The mask's pixel squares (level 0) intersected with ``rect``, by GEOS."""
    shapes = rasterio.features.shapes(mask.astype(np.uint8), mask=mask, connectivity=4,
                                      transform=Affine.scale(ds))
    return shapely.union_all([shape(g) for g, _ in shapes]).intersection(shapely.box(*rect))


def by_class(data: dict[str, Any], shift: tuple[float, float] = (0, 0)) -> dict[str, Any]:
    out: dict[str, list[Any]] = {}
    for feature in data["features"]:
        geometry = shapely.affinity.translate(shape(feature["geometry"]), *shift)
        out.setdefault(feature["properties"]["classification"]["name"], []).append(geometry)
    return {name: shapely.union_all(parts) for name, parts in out.items()}


def areas(data: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for feature in data["features"]:
        name = feature["properties"]["classification"]["name"]
        out[name] = out.get(name, 0.0) + feature["properties"]["measurements"]["Area um^2"]
    return out


def check_inside_and_valid(data: dict[str, Any], rect: tuple[float, float, float, float]) -> None:
    for feature in data["features"]:
        geometry = shape(feature["geometry"])
        assert shapely.is_valid(geometry), shapely.is_valid_reason(geometry)
        coords = shapely.get_coordinates(geometry)
        assert (coords[:, 0] >= rect[0]).all() and (coords[:, 0] <= rect[2]).all()
        assert (coords[:, 1] >= rect[1]).all() and (coords[:, 1] <= rect[3]).all()


def test_frames_and_bounds_parsing() -> None:
    assert SlideBounds.from_attrs(None) is None
    assert SlideBounds.from_attrs({"x": 1, "y": 2, "width": 0, "height": 5}) is None
    assert SlideBounds.from_attrs({"x": 1, "y": 2, "width": "3", "height": 5}) is None
    assert SlideBounds.from_attrs({"x": 1, "y": 2}) is None
    bounds = SlideBounds.from_attrs({"x": 100, "y": 40, "width": 800, "height": 600})
    assert bounds == SlideBounds(100, 40, 800, 600)
    qupath = SlideFrame.of(CoordinateFrame.QUPATH, width0=1000, height0=700, bounds=bounds)
    openslide = SlideFrame.of("openslide", width0=1000, height0=700, bounds=bounds)
    assert qupath.origin == (100, 40) and qupath.extent == (0, 0, 800, 600)
    assert openslide.origin == (0, 0) and openslide.extent == (100, 40, 900, 640)
    assert qupath.to_openslide(*qupath.from_openslide(123.5, 77.0)) == (123.5, 77.0)
    assert qupath.to_openslide(0, 0) == (100, 40)
    plain = SlideFrame.of("qupath", width0=1000, height0=700, bounds=None)
    assert plain.origin == (0, 0) and plain.extent == (0, 0, 1000, 700)
    assert SlideFrame.of("qupath", width0=None, height0=None, bounds=None).extent is None


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("frame", ["qupath", "openslide"])
def test_clipped_to_odd_slide_size_exact_and_measured(make_segmentation: Callable[..., Path], tmp_path: Path,
                                                      split: bool, frame: str) -> None:
    """The output grid rounds up: 83 x 61 output pixels x 4 cover 332 x 244 level-0 pixels of a
    329 x 243 slide. Nothing may reach past the slide; areas are those of the clipped regions."""
    labels = odd_labels()
    width0, height0 = 4 * 83 - 3, 4 * 61 - 1
    seg = make_segmentation(labels, out_mpp=OUT_MPP, slide_mpp=SLIDE_MPP, chunk=16,
                            slide={"width0": width0, "height0": height0})
    out = tmp_path / "clip.geojson"
    result = export_geojson(seg, out, split_regions=split, frame=frame, block_size=16, check_validity=True)
    data = load(out)
    rect = (0.0, 0.0, float(width0), float(height0))
    check_inside_and_valid(data, rect)
    assert result.n_repaired == 0 and result.n_clipped > 0
    assert result.origin == (0, 0) and result.extent == rect
    assert data["properties"]["wsiseg"]["frame"] == frame  # the foreign member QuPath ignores
    drawn, measured = by_class(data), areas(data)
    for index, name in enumerate(CLASSES.names):
        mask = labels == index + 1
        expected_um2 = clipped_area_px(mask, DS, rect) * SLIDE_MPP**2
        assert measured[name] == pytest.approx(expected_um2, abs=0.01)  # written with 3 decimals
        truth = exact_region(mask, DS, rect)
        assert drawn[name].symmetric_difference(truth).area < 1e-9  # exactly the pixels, cut at the edge
        assert drawn[name].area == pytest.approx(clipped_area_px(mask, DS, rect))
    if split:  # the strips: in the last column a quarter of each pixel is inside, in the last row 3/4
        necrosis = {shape(f["geometry"]).bounds: f["properties"]["measurements"]["Area um^2"]
                    for f in data["features"] if f["properties"]["classification"]["name"] == "necrosis"}
        assert necrosis[(328.0, 40.0, 329.0, 80.0)] == pytest.approx(10 * 1 * 4 * SLIDE_MPP**2)
        assert necrosis[(120.0, 240.0, 200.0, 243.0)] == pytest.approx(20 * 4 * 3 * SLIDE_MPP**2)


@pytest.mark.parametrize("simplify", [0.0, 1.2])
def test_non_integer_downsample_and_simplified_clipping(make_segmentation: Callable[..., Path],
                                                        tmp_path: Path, simplify: float) -> None:
    """0.5 um/px over 0.2527 um/px (1.9786 level-0 px per output pixel): the cut falls inside pixels and
    coordinates are rounded to 0.01 px; simplified (slanted) edges are cut by GEOS."""
    labels = make_label_map(160, 200, seed=6)[:77, :101].copy()
    ds = 0.5 / 0.2527
    width0, height0 = int(101 * ds) - 1, int(77 * ds) - 2
    seg = make_segmentation(labels, out_mpp=0.5, slide_mpp=0.2527, chunk=32,
                            slide={"width0": width0, "height0": height0})
    out = tmp_path / "ds.geojson"
    result = export_geojson(seg, out, simplify_um=simplify, block_size=32, check_validity=True)
    data = load(out)
    rect = (0.0, 0.0, float(width0), float(height0))
    check_inside_and_valid(data, rect)
    assert result.n_repaired == 0 and result.n_clipped > 0
    measured = areas(data)
    drawn = by_class(data)
    for index, name in enumerate(CLASSES.names):
        mask = labels == index + 1
        expected = clipped_area_px(mask, ds, rect)
        assert measured[name] == pytest.approx(expected * 0.2527**2, rel=1e-4)
        if simplify == 0:
            difference = drawn[name].symmetric_difference(exact_region(mask, ds, rect))
            assert difference.area < 0.02 * ds * mask.sum()  # coordinates rounded to 0.01 px


def test_mean_probability_of_a_clipped_region(make_segmentation: Callable[..., Path], tmp_path: Path) -> None:
    """Two columns of one region: the inner one wholly inside (p = 200), the last one a quarter inside
    (p = 100): the mean is weighted by the part inside."""
    labels = np.ones((8, 10), dtype=np.uint8)
    labels[:, 8:] = 2
    probs = np.zeros((3, 8, 10), dtype=np.uint8)
    probs[1, :, 8] = 200
    probs[1, :, 9] = 100
    seg = make_segmentation(labels, probs, out_mpp=OUT_MPP, slide_mpp=SLIDE_MPP, n_levels=1,
                            slide={"width0": 4 * 9 + 1, "height0": 4 * 8})
    out = tmp_path / "p.geojson"
    export_geojson(seg, out, split_regions=True)
    (tumour,) = [f for f in load(out)["features"] if f["properties"]["classification"]["name"] == "tumour"]
    measurements = tumour["properties"]["measurements"]
    assert measurements["Area um^2"] == pytest.approx(8 * (4 + 1) * 4 * SLIDE_MPP**2)
    assert measurements["Mean probability"] == pytest.approx((200 * 1 + 100 * 0.25) / 1.25 / 255, abs=1e-4)
    assert shape(tumour["geometry"]).bounds == (32.0, 0.0, 37.0, 32.0)


def test_bounds_give_the_qupath_frame_and_the_openslide_frame(make_segmentation: Callable[..., Path],
                                                              tmp_path: Path) -> None:
    """A MIRAX-like slide: the scanned rectangle (bounds) is part of level 0. QuPath shows only it, with
    its corner at (0, 0); --frame openslide keeps level 0. Regions outside the bounds are not written."""
    labels = odd_labels()
    bounds = {"x": 37, "y": 21, "width": 201, "height": 150}
    seg = make_segmentation(labels, out_mpp=OUT_MPP, slide_mpp=SLIDE_MPP, chunk=16,
                            slide={"width0": 4 * 83 - 3, "height0": 4 * 61 - 1, "bounds": bounds})
    qupath, openslide = tmp_path / "q.geojson", tmp_path / "o.geojson"
    rq = export_geojson(seg, qupath, block_size=16, check_validity=True)
    ro = export_geojson(seg, openslide, frame=CoordinateFrame.OPENSLIDE, block_size=16, check_validity=True)
    assert rq.frame is CoordinateFrame.QUPATH and rq.origin == (37, 21) and rq.extent == (0, 0, 201, 150)
    assert ro.frame is CoordinateFrame.OPENSLIDE and ro.origin == (0, 0) and ro.extent == (37, 21, 238, 171)
    dq, do = load(qupath), load(openslide)
    check_inside_and_valid(dq, (0, 0, 201, 150))
    check_inside_and_valid(do, (37, 21, 238, 171))
    assert dq["properties"]["wsiseg"]["origin_openslide"] == [37, 21]
    assert dq["properties"]["wsiseg"]["bounds_openslide"] == bounds
    rect = (37.0, 21.0, 238.0, 171.0)  # in OpenSlide level 0
    in_openslide = by_class(dq, shift=(37, 21))
    for index, name in enumerate(CLASSES.names):
        mask = labels == index + 1
        truth = exact_region(mask, DS, rect)
        assert in_openslide[name].symmetric_difference(truth).area < 1e-9
        assert by_class(do)[name].symmetric_difference(truth).area < 1e-9
        assert areas(dq)[name] == pytest.approx(clipped_area_px(mask, DS, rect) * SLIDE_MPP**2, abs=0.01)
    assert [f["id"] for f in dq["features"]] == [f["id"] for f in do["features"]]  # same objects


def test_without_bounds_both_frames_are_the_same(segmentation: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.geojson", tmp_path / "b.geojson"
    export_geojson(segmentation, a, frame="qupath")
    export_geojson(segmentation, b, frame="openslide")
    da, db = load(a), load(b)
    assert da["features"] == db["features"]
    assert da["properties"]["wsiseg"]["origin_openslide"] == [0, 0]


def test_bad_frame(segmentation: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="coordinate frame"):
        export_geojson(segmentation, tmp_path / "x.geojson", frame="napari")


def test_legacy_output_without_size_is_not_clipped(make_segmentation: Callable[..., Path],
                                                   tmp_path: Path) -> None:
    """Outputs that record no slide size export as before (nothing to clip to)."""
    labels = make_label_map(160, 200, seed=4)[:40, :50].copy()
    probabilities = make_probabilities(labels)
    seg = make_segmentation(labels, probabilities, out_mpp=OUT_MPP, slide_mpp=SLIDE_MPP,
                            slide={"width0": None, "height0": None})
    result = export_geojson(seg, tmp_path / "x.geojson")
    assert result.extent is None and result.n_clipped == 0
