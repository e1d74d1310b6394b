"""export_geojson: exact, valid, QuPath-shaped polygons from the label pyramid; block-wise == single pass."""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage
from shapely.geometry import shape

from wsiseg.errors import ClassMismatchError, ConfigError, OutputError
from wsiseg.export import LabelSource, ObjectType, export_geojson, export_label_source
from wsiseg.io.geojson_write import ID_NAMESPACE

from .conftest import CLASSES, OUT_MPP, SLIDE_MPP

SCHEMA = json.loads((Path(__file__).parent / "qupath_geojson.schema.json").read_text())
DOWNSAMPLE = OUT_MPP / SLIDE_MPP  # level-0 slide pixels per output level-0 pixel (not an integer)


def load(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def validate_qupath(data: dict[str, Any]) -> None:
    """QuPath's structure against the JSON schema (rings shortened to their first 3 positions + closing one,
    since jsonschema checks each position in Python), and every position with numpy: two finite,
    non-negative numbers, rings closed."""
    light = copy.deepcopy({**data, "features": []})
    for feature in data["features"]:
        geometry = feature["geometry"]
        polygons = [geometry["coordinates"]] if geometry.get("type") == "Polygon" else geometry["coordinates"]
        for polygon in polygons:
            for ring in polygon:
                positions = np.asarray(ring, dtype=np.float64)
                assert positions.ndim == 2 and positions.shape[1] == 2 and len(positions) >= 4
                assert np.isfinite(positions).all() and (positions >= 0).all()
                assert (positions[0] == positions[-1]).all()
        short = [[[*ring[:3], ring[-1]] for ring in polygon] for polygon in polygons]
        coordinates = short[0] if geometry.get("type") == "Polygon" else short
        light["features"].append({**feature, "geometry": {"type": geometry.get("type"),
                                                          "coordinates": coordinates}})
    jsonschema.validate(light, SCHEMA)


def rasterise(geometry: Any, shape_yx: tuple[int, int], downsample: float) -> np.ndarray:
    """Pixel-centre rasterisation of level-0 geometry onto a grid of ``downsample`` level-0 px per pixel."""
    out = rasterio.features.rasterize([(geometry, 1)], out_shape=shape_yx, transform=Affine.scale(downsample),
                                      fill=0, dtype=np.uint8)
    return np.asarray(out, dtype=bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def by_class(data: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for feature in data["features"]:
        out.setdefault(feature["properties"]["classification"]["name"], []).append(shape(feature["geometry"]))
    return out


@pytest.mark.parametrize("split", [False, True])
def test_polygons_reproduce_label_map_exactly(segmentation: Path, label_map: np.ndarray, tmp_path: Path,
                                              split: bool) -> None:
    out = tmp_path / "out.geojson"
    result = export_geojson(segmentation, out, split_regions=split, block_size=64, check_validity=True)
    data = load(out)
    validate_qupath(data)
    groups = by_class(data)
    assert set(groups) == set(CLASSES.names)
    for index, name in enumerate(CLASSES.names):
        drawn = rasterise(shapely.union_all(groups[name]), label_map.shape, DOWNSAMPLE)
        truth = label_map == index + 1
        assert iou(drawn, truth) >= 0.999
        assert np.array_equal(drawn, truth)  # exact pixel edges: not a single pixel differs
    assert result.n_repaired == 0
    assert result.n_features == (sum(result.regions_per_class.values()) if split else 3)
    # The number of polygons per class is the number of 4-connected components of that class.
    for index, name in enumerate(CLASSES.names):
        n_components = ndimage.label(label_map == index + 1)[1]
        assert result.regions_per_class[name] == n_components
        n_polygons = sum(len(shapely.get_parts(g)) for g in groups[name])
        assert n_polygons == n_components


def test_schema_rejects_what_qupath_cannot_import(segmentation: Path, tmp_path: Path) -> None:
    out = tmp_path / "ok.geojson"
    export_geojson(segmentation, out)
    good = load(out)
    validate_qupath(good)
    feature = good["features"][0]
    broken: list[dict[str, Any]] = []
    for change in ("no colour", "class outside properties", "no objectType", "bad objectType", "no id",
                   "one-part MultiPolygon"):
        f = copy.deepcopy(feature)
        props = f["properties"]
        if change == "one-part MultiPolygon":  # QuPath 0.5 imports nothing from the file
            polygon = shape(f["geometry"]).geoms[0] if f["geometry"]["type"] == "MultiPolygon" else shape(
                f["geometry"])
            f["geometry"] = shapely.geometry.mapping(shapely.MultiPolygon([polygon]))
        elif change == "no colour":
            del props["classification"]["color"]
        elif change == "class outside properties":
            f["classification"] = props.pop("classification")
        elif change == "no objectType":
            del props["objectType"]
        elif change == "bad objectType":
            props["objectType"] = "cell"
        else:
            del f["id"]
        broken.append(f)
    for f in broken:
        with pytest.raises(jsonschema.ValidationError):
            validate_qupath({"type": "FeatureCollection", "features": [f]})


def test_every_geometry_is_valid(segmentation: Path, tmp_path: Path) -> None:
    for split in (False, True):
        for simplify in (0.0, 1.5):
            out = tmp_path / f"out-{split}-{simplify}.geojson"
            result = export_geojson(segmentation, out, split_regions=split, simplify_um=simplify,
                                    block_size=48, check_validity=True)
            geometries = [shape(f["geometry"]) for f in load(out)["features"]]
            assert all(g.is_valid for g in geometries), [shapely.is_valid_reason(g) for g in geometries]
            assert result.n_repaired == 0


@pytest.mark.parametrize("split", [False, True])
def test_pixel_noise_worst_case_is_valid_and_blockwise_exact(make_segmentation: Callable[..., Path],
                                                             tmp_path: Path, split: bool) -> None:
    """Unsmoothed random labels: thousands of diagonal touches, pinch points and holes touching shells."""
    labels = np.random.default_rng(7).integers(0, 4, (72, 96)).astype(np.uint8)
    labels[30:44, :] = 2  # plus one region crossing every block column
    seg = make_segmentation(labels, slide_mpp=OUT_MPP)
    single, blocks = tmp_path / "single.geojson", tmp_path / "blocks.geojson"
    r1 = export_geojson(seg, single, split_regions=split, block_size=100_000, check_validity=True)
    r2 = export_geojson(seg, blocks, split_regions=split, block_size=16, check_validity=True)
    assert r1.n_repaired == r2.n_repaired == 0
    a = {f["id"]: shape(f["geometry"]) for f in load(single)["features"]}
    b = {f["id"]: shape(f["geometry"]) for f in load(blocks)["features"]}
    assert a.keys() == b.keys()
    assert all(a[k].is_valid and b[k].is_valid and a[k].equals(b[k]) for k in a)
    for value in (1, 2, 3):
        drawn = rasterise(shapely.union_all(list(by_class(load(blocks))[CLASSES.names[value - 1]])),
                          labels.shape, 1.0)
        assert np.array_equal(drawn, labels == value)


def test_holes_survive_as_interior_rings(make_segmentation: Callable[..., Path], tmp_path: Path) -> None:
    labels = np.full((40, 40), 1, dtype=np.uint8)  # stroma everywhere ...
    labels[5:35, 5:35] = 2  # ... a tumour ring ...
    labels[10:30, 10:30] = 3  # ... around a necrosis hole ...
    labels[15:25, 15:25] = 2  # ... holding a tumour island ...
    labels[18:22, 18:22] = 1  # ... with a stroma hole of its own
    seg = make_segmentation(labels, slide_mpp=OUT_MPP)
    out = tmp_path / "holes.geojson"
    export_geojson(seg, out, block_size=16)
    groups = by_class(load(out))
    tumour = groups["tumour"][0]
    assert isinstance(tumour, shapely.MultiPolygon) and len(tumour.geoms) == 2
    ring, island = sorted(tumour.geoms, key=lambda p: -p.area)
    assert len(ring.interiors) == 1 and ring.area == 30 * 30 - 20 * 20
    assert shapely.Polygon(ring.interiors[0]).area == 20 * 20
    assert len(island.interiors) == 1 and island.area == 10 * 10 - 4 * 4
    necrosis = groups["necrosis"][0]  # one region: a Polygon (QuPath 0.5 fails on one-part MultiPolygons)
    assert isinstance(necrosis, shapely.Polygon)
    assert len(necrosis.interiors) == 1 and necrosis.area == 20 * 20 - 10 * 10
    stroma = groups["stroma"][0]
    assert isinstance(stroma, shapely.MultiPolygon)
    assert sorted(p.area for p in stroma.geoms) == [16, 40 * 40 - 30 * 30]


@pytest.mark.parametrize("simplify", [0.0, 2.0])
def test_blockwise_export_equals_single_pass(segmentation: Path, tmp_path: Path, simplify: float) -> None:
    single = load(_export(segmentation, tmp_path / "single.geojson", block_size=100_000, simplify=simplify))
    for block_size in (16, 37, 128):
        blocks = load(_export(segmentation, tmp_path / f"b{block_size}.geojson", block_size=block_size,
                              simplify=simplify))
        a = {f["id"]: f for f in single["features"]}
        b = {f["id"]: f for f in blocks["features"]}
        assert a.keys() == b.keys()  # same regions, same stable ids
        for fid, fa in a.items():
            assert fa["properties"] == b[fid]["properties"]  # same areas and mean probabilities
            ga, gb = shape(fa["geometry"]), shape(b[fid]["geometry"])
            if simplify == 0:
                assert ga.equals(gb)  # topologically identical polygons
                assert len(shapely.get_coordinates(ga)) == len(shapely.get_coordinates(gb))
            else:  # simplification keeps block borders fixed; shapes agree to within the tolerance
                tolerance_px = 4 * simplify / SLIDE_MPP
                assert ga.hausdorff_distance(gb) <= tolerance_px


def _export(seg: Path, out: Path, block_size: int, simplify: float = 0.0) -> Path:
    export_geojson(seg, out, split_regions=True, block_size=block_size, simplify_um=simplify)
    return out


def test_simplification_is_valid_gap_free_and_smaller(segmentation: Path, label_map: np.ndarray,
                                                      tmp_path: Path) -> None:
    exact = export_geojson(segmentation, tmp_path / "exact.geojson", block_size=64)
    simple = export_geojson(segmentation, tmp_path / "simple.geojson", simplify_um=1.0, block_size=64)
    assert simple.n_vertices < 0.6 * exact.n_vertices
    groups = {k: v[0] for k, v in by_class(load(tmp_path / "simple.geojson")).items()}
    assert all(g.is_valid for g in groups.values())
    names = list(groups)
    for i, a in enumerate(names):  # coverage simplification: neighbouring classes do not overlap (up to
        for b in names[i + 1:]:  # the 0.01 px rounding of written coordinates: slivers < 1e-4 px^2 in all)
            assert groups[a].intersection(groups[b]).area < 1e-4
    for index, name in enumerate(CLASSES.names):  # and still trace the classes closely
        drawn = rasterise(groups[name], label_map.shape, DOWNSAMPLE)
        assert iou(drawn, label_map == index + 1) > 0.85


def test_measurements_area_and_mean_probability(segmentation: Path, label_map: np.ndarray,
                                                probabilities: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "m.geojson"
    export_geojson(segmentation, out, block_size=50)
    for feature in load(out)["features"]:
        name = feature["properties"]["classification"]["name"]
        index = CLASSES.index(name)
        inside = label_map == index + 1
        measurements = feature["properties"]["measurements"]
        assert measurements["Area um^2"] == pytest.approx(inside.sum() * OUT_MPP**2, rel=1e-9)
        expected = probabilities[index][inside].mean() / 255
        assert measurements["Mean probability"] == pytest.approx(expected, abs=1e-4)
        assert feature["properties"]["classification"]["color"] == list(CLASSES.classes[index].color)
        assert feature["properties"]["objectType"] == "annotation"
        # level-0 slide pixels: the traced area times the downsample squared
        assert shape(feature["geometry"]).area == pytest.approx(inside.sum() * DOWNSAMPLE**2, rel=1e-4)


def test_split_region_measurements_match_components(segmentation: Path, label_map: np.ndarray,
                                                    probabilities: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "regions.geojson"
    export_geojson(segmentation, out, split_regions=True, block_size=40, classes=["necrosis"])
    features = load(out)["features"]
    components, n = ndimage.label(label_map == 3)
    assert len(features) == n
    for feature in features:
        geometry = shape(feature["geometry"])
        point = geometry.representative_point()
        cid = components[int(point.y / DOWNSAMPLE), int(point.x / DOWNSAMPLE)]
        inside = components == cid
        measurements = feature["properties"]["measurements"]
        assert measurements["Area um^2"] == pytest.approx(inside.sum() * OUT_MPP**2)
        expected = probabilities[2][inside].mean() / 255
        assert measurements["Mean probability"] == pytest.approx(expected, abs=1e-4)


def test_gzip_output_and_stable_ids(segmentation: Path, tmp_path: Path) -> None:
    plain, packed = tmp_path / "a.geojson", tmp_path / "a.geojson.gz"
    export_geojson(segmentation, plain, split_regions=True)
    result = export_geojson(segmentation, packed, split_regions=True)
    with open(packed, "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"
    assert load(packed) == load(plain)
    assert result.n_bytes < plain.stat().st_size / 3
    again = tmp_path / "b.geojson"
    export_geojson(segmentation, again, split_regions=True, block_size=33)
    assert again.read_bytes() != b"" and sorted(f["id"] for f in load(again)["features"]) == \
        sorted(f["id"] for f in load(plain)["features"])
    ids = [f["id"] for f in load(plain)["features"]]
    assert len(set(ids)) == len(ids)
    import uuid
    assert all(uuid.UUID(i).version == 5 for i in ids)
    assert str(ID_NAMESPACE)  # ids are uuid5 in wsiseg's namespace


def test_min_area_class_filter_and_detections(segmentation: Path, label_map: np.ndarray,
                                              tmp_path: Path) -> None:
    out = tmp_path / "filtered.geojson"
    min_area = 20 * OUT_MPP**2  # 20 pixels
    result = export_geojson(segmentation, out, split_regions=True, min_area_um2=min_area,
                            classes=["tumour", "stroma"], object_type=ObjectType.DETECTION)
    data = load(out)
    validate_qupath(data)
    for index, name in ((0, "stroma"), (1, "tumour")):
        components = ndimage.label(label_map == index + 1)[0]
        sizes = np.bincount(components.ravel())[1:]
        assert result.regions_per_class[name] == int((sizes >= 20).sum())
    assert {f["properties"]["classification"]["name"] for f in data["features"]} == {"tumour", "stroma"}
    assert all(f["properties"]["objectType"] == "detection" for f in data["features"])
    assert min(f["properties"]["measurements"]["Area um^2"] for f in data["features"]) >= min_area


def test_coarser_level_by_level_and_mpp(segmentation: Path, label_map: np.ndarray, tmp_path: Path) -> None:
    level1 = label_map[::2, ::2]
    for kwargs in ({"level": 1}, {"mpp": 1.2}):
        out = tmp_path / "l1.geojson"
        result = export_geojson(segmentation, out, **kwargs)  # type: ignore[arg-type]
        assert result.level == 1 and result.mpp == pytest.approx(2 * OUT_MPP)
        for name, geometries in by_class(load(out)).items():
            drawn = rasterise(geometries[0], level1.shape, 2 * DOWNSAMPLE)
            assert np.array_equal(drawn, level1 == CLASSES.index(name) + 1)


def test_zarr_v3_ngff_05_store(make_segmentation: Callable[..., Path], label_map: np.ndarray,
                               probabilities: np.ndarray, tmp_path: Path) -> None:
    seg = make_segmentation(label_map, probabilities, zarr_format=3)
    out = tmp_path / "v3.geojson"
    result = export_geojson(seg, out, block_size=64)
    data = load(out)
    validate_qupath(data)
    assert result.n_features == 3
    tumour = by_class(data)["tumour"][0]
    assert np.array_equal(rasterise(tumour, label_map.shape, DOWNSAMPLE), label_map == 2)


@pytest.mark.parametrize("split", [False, True])
def test_in_memory_source_without_probabilities(label_map: np.ndarray, tmp_path: Path, split: bool) -> None:
    source = LabelSource(labels=label_map, probabilities=None, classes=CLASSES, level=0, n_levels=1,
                         mpp_x=1.0, mpp_y=2.0, downsample_x=4.0, downsample_y=8.0, slide_id="mem")
    out = tmp_path / "mem.geojson"
    export_label_source(source, out, block_size=70, split_regions=split)
    data = load(out)
    validate_qupath(data)
    assert all("Mean probability" not in f["properties"]["measurements"] for f in data["features"])
    for name, geometries in by_class(data).items():
        truth = label_map == CLASSES.index(name) + 1
        drawn = np.asarray(rasterio.features.rasterize(
            [(shapely.union_all(geometries), 1)], out_shape=label_map.shape, transform=Affine.scale(4.0, 8.0),
            fill=0, dtype=np.uint8), dtype=bool)
        assert np.array_equal(drawn, truth)  # anisotropic downsample: x * 4, y * 8
        area = sum(f["properties"]["measurements"]["Area um^2"] for f in data["features"]
                   if f["properties"]["classification"]["name"] == name)
        assert area == pytest.approx(truth.sum() * 2.0)


def test_user_errors(segmentation: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.geojson"
    with pytest.raises(OutputError, match="does not exist"):
        export_geojson(tmp_path / "missing.zarr", out)
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(OutputError, match="not a"):
        export_geojson(tmp_path / "empty.zarr", out)
    with pytest.raises(ClassMismatchError, match="unknown class 'fat'"):
        export_geojson(segmentation, out, classes=["fat"])
    with pytest.raises(ConfigError, match="level 5 does not exist"):
        export_geojson(segmentation, out, level=5)
    with pytest.raises(ConfigError, match="not both"):
        export_geojson(segmentation, out, level=0, mpp=0.5)
    with pytest.raises(ConfigError, match="simplify"):
        export_geojson(segmentation, out, simplify_um=-1)
    with pytest.raises(ConfigError, match="object type"):
        export_geojson(segmentation, out, object_type="cell")
    with pytest.raises(OutputError, match="folder does not exist"):
        export_geojson(segmentation, tmp_path / "nope" / "x.geojson")
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
