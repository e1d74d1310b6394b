"""GeoJSON that QuPath 0.5 and 0.6 import (issue 21; REFERENCE.md section 11, docs/qupath-import.md):
``Polygon`` for one polygon in every export mode, every feature valid as assembled on the shapes that could
break it, at most ``max_parts`` polygons per feature and ``max_bytes`` per file; shapely is the independent
parser, exact areas come from the label pixels."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from shapely.geometry import box

from wsiseg.classes import ClassList
from wsiseg.errors import ConfigError
from wsiseg.export import export_geojson
from wsiseg.io.geojson_write import GeoJSONWriter, part_path

from .conftest import CLASSES, make_label_map
from .qupath_rules import checked_geometry
from .test_export_geojson import validate_qupath

OUT_MPP, SLIDE_MPP = 0.5, 0.25  # an integer downsample (2): areas in level-0 px^2 are exact
DS = OUT_MPP / SLIDE_MPP
STROMA, TUMOUR, NECROSIS = 1, 2, 3


def load(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def pixel_union(mask: np.ndarray) -> Any:
    """The exact region of the True pixels, in level-0 px (independent of the exporter: a union of boxes)."""
    ys, xs = np.nonzero(mask)
    return shapely.union_all(shapely.box(xs * DS, ys * DS, (xs + 1) * DS, (ys + 1) * DS))


def art(*rows: str, fill: int = STROMA) -> np.ndarray:
    """A label map drawn as text: ``#`` tumour, ``n`` necrosis, ``.`` the fill class, ``_`` not analysed."""
    codes = {"#": TUMOUR, "n": NECROSIS, ".": fill, "_": 0}
    return np.array([[codes[c] for c in row] for row in rows], dtype=np.uint8)


def padded(core: np.ndarray, pad: int = 3) -> np.ndarray:
    return np.pad(core, pad, constant_values=STROMA)


#: The shapes that could make a feature invalid as assembled (or a one-part MultiPolygon).
SHAPES: dict[str, np.ndarray] = {
    "one tumour region": padded(art("####", "####", "####")),
    "parts touching at a vertex": padded(art("##..", "##..", "..##", "..##")),
    "diagonal pixel contacts": padded(art("#.#.#", ".#.#.", "#.#.#", ".#.#.")),
    "two parts touching twice around a pixel": padded(art("##.", "#.#", ".##")),
    "hole touching its shell at a vertex": padded(art(".####", "#.###", "#####", "#####")),
    "holes touching each other at a vertex": padded(art("#####", "#.###", "##.##", "#####")),
    "hole touching the shell from inside": padded(art("######", "#..###", "#..#.#", "####.#", "######")),
    "one-pixel-wide neck": padded(art("###.....###", "###########", "###.....###")),
    "island in a hole": padded(art("#####", "#...#", "#.#.#", "#...#", "#####")),
    "region straddling split tiles": np.where(np.add.outer(np.arange(40), np.arange(40)) % 17 < 6, TUMOUR,
                                              STROMA).astype(np.uint8),
}
#: Export modes: merged (one feature per class), split tiles (16 px: regions cut along tile borders, whose
#: pieces share edges in neighbouring features), one feature per region, and small blocks.
MODES: dict[str, dict[str, Any]] = {
    "merged": {"split_size": 0},
    "split tiles": {"split_size": 16, "block_size": 16},
    "per region": {"split_regions": True, "split_size": 16, "block_size": 16},
    "merged, small blocks": {"split_size": 0, "block_size": 16},
}


def export(make_segmentation: Callable[..., Path], tmp_path: Path, labels: np.ndarray,
           **kwargs: Any) -> dict[str, Any]:
    seg = make_segmentation(labels, out_mpp=OUT_MPP, slide_mpp=SLIDE_MPP)
    out = tmp_path / "out.geojson"
    export_geojson(seg, out, check_validity=True, **kwargs)
    data = load(out)
    validate_qupath(data)
    return data


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(SHAPES))
def test_every_feature_is_qupath_shaped_valid_and_exact(make_segmentation: Callable[..., Path],
                                                         tmp_path: Path, name: str, mode: str) -> None:
    labels = SHAPES[name]
    data = export(make_segmentation, tmp_path, labels, **MODES[mode])
    per_class: dict[str, list[Any]] = {}
    for feature in data["features"]:
        geometry = checked_geometry(feature)  # type by part count, valid as a whole
        props = feature["properties"]
        per_class.setdefault(props["name"], []).append(geometry)
        assert props["measurements"]["Area um^2"] == pytest.approx(geometry.area * SLIDE_MPP**2)
    for cls, geometries in per_class.items():
        truth = pixel_union(labels == CLASSES.index(cls) + 1)
        # features of one class never overlap, and together they are exactly the class's pixels
        assert sum(g.area for g in geometries) == pytest.approx(truth.area)
        assert shapely.union_all(geometries).symmetric_difference(truth).area == 0


def test_a_class_with_one_region_is_a_polygon_in_every_mode(make_segmentation: Callable[..., Path],
                                                            tmp_path: Path) -> None:
    """One tumour region on a slide (and in one split tile): QuPath 0.5 imported nothing from such a file
    when it held a one-part MultiPolygon."""
    labels = np.full((60, 80), STROMA, dtype=np.uint8)
    labels[18:30, 34:46] = TUMOUR  # inside one 16 px split tile
    for mode, kwargs in MODES.items():
        data = export(make_segmentation, tmp_path, labels, **kwargs)
        tumour = [f for f in data["features"] if f["properties"]["name"] == "tumour"]
        assert len(tumour) == 1 and tumour[0]["geometry"]["type"] == "Polygon", mode
        assert checked_geometry(tumour[0]).equals(box(34 * DS, 18 * DS, 46 * DS, 30 * DS))
        stroma = [checked_geometry(f) for f in data["features"] if f["properties"]["name"] == "stroma"]
        # stroma: one region with a hole when traced whole; 4 x 5 pieces (one per 16 px tile) when split
        assert len(stroma) == (1 if kwargs.get("split_size") == 0 else 20), mode
        assert all(isinstance(g, shapely.Polygon) for g in stroma)


def test_tile_and_part_are_stated_in_the_metadata(make_segmentation: Callable[..., Path],
                                                   tmp_path: Path) -> None:
    labels = make_label_map(seed=3)[:96, :120].copy()
    data = export(make_segmentation, tmp_path, labels, split_size=32, block_size=16, max_parts=3)
    seen: dict[tuple[str, str], list[int]] = {}
    for feature in data["features"]:
        geometry = checked_geometry(feature)
        meta = feature["properties"]["metadata"]
        x0, y0, x1, y1 = (float(v) for v in meta["wsiseg.tile"].split(","))
        assert box(x0, y0, x1, y1).contains(geometry)  # the split tile, in the frame's level-0 px
        assert shapely.get_num_geometries(geometry) <= 3
        seen.setdefault((feature["properties"]["name"], meta["wsiseg.tile"]), []).append(
            int(meta.get("wsiseg.part", 1)))
    assert all(parts == list(range(1, len(parts) + 1)) for parts in seen.values())
    assert max(len(p) for p in seen.values()) > 1
    assert len({f["id"] for f in data["features"]}) == len(data["features"])


@pytest.mark.parametrize("max_parts", [1, 2, 5, 10_000])
def test_polygons_per_feature_are_bounded_and_nothing_is_lost(make_segmentation: Callable[..., Path],
                                                              tmp_path: Path, max_parts: int) -> None:
    labels = np.full((50, 50), STROMA, dtype=np.uint8)
    labels[2:48:4, 2:48:4] = TUMOUR  # 12 x 12 = 144 separate tumour pixels
    data = export(make_segmentation, tmp_path, labels, split_size=0, max_parts=max_parts)
    tumour = [f for f in data["features"] if f["properties"]["name"] == "tumour"]
    counts = [shapely.get_num_geometries(checked_geometry(f)) for f in tumour]
    assert max(counts) <= max_parts and sum(counts) == 144
    assert len(tumour) == -(-144 // max_parts)
    area = sum(f["properties"]["measurements"]["Area um^2"] for f in tumour)
    assert area == pytest.approx(144 * OUT_MPP**2)


@pytest.mark.parametrize("suffix", [".geojson", ".geojson.gz"])
def test_files_are_bounded_in_size_and_stale_parts_removed(make_segmentation: Callable[..., Path],
                                                           tmp_path: Path, suffix: str) -> None:
    labels = make_label_map(seed=4)[:96, :120].copy()
    seg = make_segmentation(labels, out_mpp=OUT_MPP, slide_mpp=SLIDE_MPP)
    whole, out = tmp_path / f"whole{suffix}", tmp_path / f"slide{suffix}"
    export_geojson(seg, whole, split_regions=True, max_bytes=0)
    limit = 6000
    result = export_geojson(seg, out, split_regions=True, max_bytes=limit)
    assert len(result.paths) > 3 and result.paths[0] == out
    assert [p.name for p in result.paths[1:3]] == [f"slide-002{suffix}", f"slide-003{suffix}"]
    features = []
    for number, path in enumerate(result.paths, start=1):
        data = load(path)
        validate_qupath(data)
        assert data["properties"]["wsiseg"]["file"] == number
        text = json.dumps(data, separators=(",", ":"))
        assert len(text) <= limit or len(data["features"]) == 1
        features += data["features"]
    assert result.n_bytes == sum(p.stat().st_size for p in result.paths)
    assert features == load(whole)["features"]  # the same features, in the same order
    # a smaller export to the same name removes the earlier export's further files, and nothing else
    keep = tmp_path / f"slide-999{suffix}"
    keep.write_text("not ours")
    again = export_geojson(seg, out, split_regions=True, max_bytes=0)
    assert again.paths == [out] and not part_path(out, 2).exists() and keep.exists()
    assert load(out)["features"] == features


def test_assembled_check_repairs_what_the_parts_check_cannot_see(tmp_path: Path) -> None:
    """Two valid squares of one class that overlap: each part is valid, the MultiPolygon is not. The writer's
    assembled check (``check_validity``) repairs it; without the check the file would hold it."""
    classes = ClassList.from_names(["tumour"])
    squares = np.array([box(0, 0, 10, 10), box(5, 0, 15, 10), box(30, 30, 31, 31)], dtype=object)
    for check in (False, True):
        out = tmp_path / f"check{check}.geojson"
        with GeoJSONWriter(out, classes, "mem", 0, check_assembled=check) as writer:
            writer.add(squares, np.zeros(3, dtype=np.int64), np.ones(3), np.full(3, 100.0), None,
                       np.zeros((3, 2), dtype=np.int64))
        geometry = shapely.geometry.shape(load(out)["features"][0]["geometry"])
        assert geometry.is_valid is check
        assert writer.n_repaired == int(check)
    assert geometry.area == 151 and shapely.get_num_geometries(geometry) == 2


def test_limits_are_checked(make_segmentation: Callable[..., Path], tmp_path: Path) -> None:
    seg = make_segmentation(make_label_map()[:40, :40].copy())
    with pytest.raises(ConfigError, match="polygons per feature"):
        export_geojson(seg, tmp_path / "x.geojson", max_parts=0)
    with pytest.raises(ConfigError, match="file size limit"):
        export_geojson(seg, tmp_path / "x.geojson", max_bytes=-1)


@pytest.mark.parametrize(("name", "expected"), [
    ("slide.geojson", "slide-002.geojson"), ("slide.geojson.gz", "slide-002.geojson.gz"),
    ("case.17.json", "case.17-002.json"), ("Slide.GeoJSON", "Slide-002.GeoJSON"), ("plain", "plain-002"),
])
def test_part_names(name: str, expected: str) -> None:
    assert part_path(Path(name), 1) == Path(name)
    assert part_path(Path(name), 2) == Path(expected)
