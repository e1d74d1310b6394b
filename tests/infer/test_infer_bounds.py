"""Slides with ``openslide.bounds-*`` (MIRAX and others, which QuPath shows cropped): a ROI drawn in
QuPath -> ``segment --mask`` -> ``export`` lands on exactly the ROI's pixels, in QuPath's frame by default
and in OpenSlide's when asked, and the output records the bounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import shapely
from shapely.geometry import box, shape

from tests.export.qupath_rules import checked_geometry
from wsiseg.cli import main
from wsiseg.infer import open_segmentation
from wsiseg.slide import _backends, open_slide

from .conftest import SyntheticSlide

#: the scanned rectangle in OpenSlide level 0 of the 2048 x 1536 synthetic slide
BOUNDS = {"x": 512, "y": 256, "width": 1280, "height": 1024}


@pytest.fixture
def bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every slide opened through OpenSlide reports :data:`BOUNDS` as its ``openslide.bounds-*``."""
    original = _backends._OpenSlideBackend.__init__

    def with_bounds(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.properties.update({f"openslide.bounds-{k}": str(v) for k, v in BOUNDS.items()})

    monkeypatch.setattr(_backends._OpenSlideBackend, "__init__", with_bounds)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        main(args)
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    capsys.readouterr()


def _roi_file(path: Path, rect: tuple[int, int, int, int]) -> Path:
    x0, y0, x1, y1 = rect
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"objectType": "annotation"},
        "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
    }]}))
    return path


@pytest.mark.usefixtures("bounded")
@pytest.mark.parametrize(("frame", "offset"), [("qupath", (512, 256)), ("openslide", (0, 0))])
def test_roi_round_trip_lands_on_the_same_pixels(synthetic_slide: SyntheticSlide, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str], frame: str,
                                                 offset: tuple[int, int]) -> None:
    with open_slide(synthetic_slide.path) as slide:
        assert slide.bounds is not None and slide.bounds.as_dict() == BOUNDS
    # 256 level-0 px tiles (64 px at 2 um/px over 0.5 um/px); the ROI covers whole tiles: OpenSlide level 0
    # (768, 512)-(1280, 1024), inside the bounds
    roi_os = (768, 512, 1280, 1024)
    ox, oy = offset
    roi = (roi_os[0] - ox, roi_os[1] - oy, roi_os[2] - ox, roi_os[3] - oy)
    out, geojson = tmp_path / "s.zarr", tmp_path / "s.geojson"
    _run(["segment", str(synthetic_slide.path), "--model", "null", "--mpp", "2", "--tile-size", "64",
          "--overlap", "0", "--mask", str(_roi_file(tmp_path / "roi.geojson", roi)), "--geojson-frame", frame,
          "--out", str(out), "--quiet"], capsys)
    seg = open_segmentation(out)
    assert seg.metadata.to_json()["slide"]["bounds"] == BOUNDS
    _run(["export", str(out), "--geojson", str(geojson), "--frame", frame], capsys)
    data = json.loads(geojson.read_text())
    # the constant model gives one region per class: written as a Polygon (QuPath 0.5), valid as a whole
    assert data["features"] and all(f["geometry"]["type"] == "Polygon" for f in data["features"])
    regions = [checked_geometry(f) for f in data["features"]]
    union = shapely.union_all(regions)
    assert union.symmetric_difference(box(*roi)).area == 0, (union.bounds, roi)
    assert data["properties"]["wsiseg"]["frame"] == frame
    assert data["properties"]["wsiseg"]["origin_openslide"] == list(offset)


@pytest.mark.usefixtures("bounded")
def test_export_clips_to_the_bounds(synthetic_slide: SyntheticSlide, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Without a ROI every tile is analysed, but what QuPath shows (and gets) is the bounds rectangle."""
    out, geojson = tmp_path / "s.zarr", tmp_path / "s.geojson"
    _run(["segment", str(synthetic_slide.path), "--model", "null", "--mpp", "2", "--tile-size", "64",
          "--overlap", "0", "--no-tissue", "--out", str(out), "--quiet"], capsys)
    _run(["export", str(out), "--geojson", str(geojson)], capsys)
    union = shapely.union_all([shape(f["geometry"]) for f in json.loads(geojson.read_text())["features"]])
    assert union.symmetric_difference(box(0, 0, BOUNDS["width"], BOUNDS["height"])).area == 0
