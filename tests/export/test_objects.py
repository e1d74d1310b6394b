"""Objects export: one QuPath object per connected region with measurements, checked against an independent
computation (scikit-image's connected components and region properties, numpy over the pixels, the shapes'
true geometry) on label maps with known shapes."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import shape
from skimage.measure import label as components
from skimage.measure import regionprops

from wsiseg.classes import ClassList
from wsiseg.cli import main
from wsiseg.export import LabelSource, ObjectType, export_geojson, export_label_source, object_table_path

from .test_export_geojson import load, validate_qupath

CLASSES = ClassList.from_names(["gland", "stroma", "background"])
MPP = 0.5  # um/px of the map (its level 0)
GLAND, STROMA, BACK = 1, 2, 3
#: discs (centre y, x, radius px) of class gland, away from everything else
DISCS = [(40, 40, 12), (40, 120, 25), (150, 60, 6), (130, 300, 40)]


def known_map() -> tuple[np.ndarray, dict[str, shapely.Geometry]]:
    """A 320 x 420 map: background, discs, a ring (annulus), a C shape, a gland touching a stroma region,
    and a gland crossing the 128-px tile borders at (256, 256). Returns (labels, true shape per name)."""
    h, w = 320, 420
    yy, xx = np.mgrid[:h, :w] + 0.5
    labels = np.full((h, w), BACK, np.uint8)
    truth: dict[str, shapely.Geometry] = {}
    for i, (cy, cx, r) in enumerate(DISCS):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = GLAND
        truth[f"disc{i}"] = shapely.Point(cx, cy).buffer(r, 256)
    ring = ((yy - 250) ** 2 + (xx - 60) ** 2 <= 30 ** 2) & ((yy - 250) ** 2 + (xx - 60) ** 2 > 15 ** 2)
    labels[ring] = GLAND
    truth["ring"] = shapely.Point(60, 250).buffer(30, 256).difference(shapely.Point(60, 250).buffer(15, 256))
    c_shape = ((yy - 60) ** 2 + (xx - 220) ** 2 <= 28 ** 2) & ~((np.abs(yy - 60) < 8) & (xx > 215))
    c_shape &= ~((yy - 60) ** 2 + (xx - 220) ** 2 <= 14 ** 2)
    labels[c_shape] = GLAND
    labels[200:240, 150:190] = GLAND  # touching a stroma block on its right
    labels[200:240, 190:230] = STROMA
    truth["square"] = shapely.box(150, 200, 190, 240)
    labels[240:275, 240:275] = GLAND  # crosses the 256-px lines of a 128-px split grid
    truth["crossing"] = shapely.box(240, 240, 275, 275)
    return labels, truth


def known_probabilities(labels: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (len(CLASSES), *labels.shape), dtype=np.uint8)


def source_of(labels: np.ndarray, probabilities: np.ndarray | None) -> LabelSource:
    return LabelSource(labels=labels, probabilities=probabilities, classes=CLASSES, level=0, n_levels=1,
                       mpp_x=MPP, mpp_y=MPP, downsample_x=1.0, downsample_y=1.0, slide_id="known")


def read_table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, dict, list, Path]:
    labels, _ = known_map()
    probs = known_probabilities(labels)
    out = tmp_path_factory.mktemp("objects") / "glands.geojson"
    result = export_label_source(source_of(labels, probs), out, classes=["gland"], objects=True,
                                 object_type=ObjectType.DETECTION, block_size=64, split_size=128)
    assert result.table == object_table_path(out) == out.with_name("glands.objects.csv")
    return labels, probs, load(out), read_table(result.table), out


def test_one_object_per_connected_region(exported: tuple) -> None:
    labels, _, data, rows, _ = exported
    comps = components(labels == GLAND, connectivity=1)
    assert len(data["features"]) == len(rows) == comps.max() == len(DISCS) + 4
    validate_qupath(data)
    ids = [f["id"] for f in data["features"]]
    assert len(set(ids)) == len(ids) and [r["object_id"] for r in rows] == ids
    for feature in data["features"]:
        props = feature["properties"]
        assert props["objectType"] == "detection" and props["classification"]["name"] == "gland"
        # exactly the component's pixels (pixel-centre rasterisation of the polygon)
        geometry = shape(feature["geometry"])
        inside = shapely.contains_xy(geometry, *np.mgrid[:labels.shape[1], :labels.shape[0]] + 0.5).T
        values = np.unique(comps[inside])
        assert len(values) == 1 and values[0] > 0 and inside.sum() == (comps == values[0]).sum()


def test_measurements_against_independent_computation(exported: tuple) -> None:
    labels, probs, data, rows, _ = exported
    comps = components(labels == GLAND, connectivity=1)
    props = {p.label: p for p in regionprops(comps)}
    for feature, row in zip(data["features"], rows, strict=True):
        m = feature["properties"]["measurements"]
        geometry = shape(feature["geometry"])
        inside = shapely.contains_xy(geometry, *np.mgrid[:labels.shape[1], :labels.shape[0]] + 0.5).T
        p = props[int(np.unique(comps[inside])[0])]
        region = comps == p.label
        assert m["Area um^2"] == pytest.approx(p.area * MPP * MPP, abs=1e-3)
        assert m["Equivalent diameter um"] == pytest.approx(p.equivalent_diameter_area * MPP, rel=1e-4)
        assert m["Solidity"] == pytest.approx(p.solidity, abs=0.03)  # polygon hull vs pixel hull
        assert m["Mean probability"] == pytest.approx(probs[GLAND - 1][region].mean() / 255, abs=1e-4)
        assert m["Max probability"] == pytest.approx(probs[GLAND - 1][region].max() / 255, abs=1e-4)
        assert m["Perimeter um"] == pytest.approx(p.perimeter * MPP, rel=0.08)  # two estimators
        assert float(row["Area um^2"]) == pytest.approx(m["Area um^2"], rel=1e-5)
        assert float(row["Circularity"]) == pytest.approx(m["Circularity"], rel=1e-3)
        cx, cy = float(row["centroid_x_px"]), float(row["centroid_y_px"])
        assert (cy, cx) == pytest.approx((p.centroid[0] + 0.5, p.centroid[1] + 0.5), abs=0.5)


def test_perimeter_and_circularity_of_known_shapes(exported: tuple) -> None:
    """Against the true shapes: discs, the ring (its hole's outline counts), the square and the region
    crossing the split tiles (one object, its true box)."""
    _, _, data, _, _ = exported
    _, truth = known_map()
    geometries = [shape(f["geometry"]) for f in data["features"]]
    for name, true in truth.items():
        feature = data["features"][int(np.argmax([g.intersection(true).area for g in geometries]))]
        m = feature["properties"]["measurements"]
        assert m["Perimeter um"] == pytest.approx(true.length * MPP, rel=0.04), name
        assert m["Area um^2"] == pytest.approx(true.area * MPP * MPP, rel=0.03), name
        if name.startswith("disc"):
            assert m["Circularity"] == pytest.approx(1.0, abs=0.08), name
        if name in ("square", "crossing"):
            assert m["Solidity"] == pytest.approx(1.0)
            assert m["Circularity"] == pytest.approx(math.pi / 4, rel=0.01)
        if name == "ring":
            assert m["Solidity"] == pytest.approx(1 - 0.25, abs=0.03)


def test_c_shape_is_concave(exported: tuple) -> None:
    _, _, data, _, _ = exported
    c = [f for f in data["features"] if shape(f["geometry"]).intersects(shapely.Point(220, 60).buffer(27))]
    assert len(c) == 1
    m = c[0]["properties"]["measurements"]
    assert m["Solidity"] < 0.9 and m["Circularity"] < 0.6


def test_independent_of_block_size_and_split_tiles(exported: tuple, tmp_path: Path) -> None:
    labels, probs, _, rows, _ = exported
    out = tmp_path / "b.geojson"
    result = export_label_source(source_of(labels, probs), out, classes=["gland"], objects=True,
                                 block_size=512, split_size=0)
    assert result.table is not None

    def by_id(table: list[dict[str, str]]) -> list[dict[str, str]]:
        return sorted(table, key=lambda r: r["object_id"])

    assert by_id(read_table(result.table)) == by_id(rows)  # emitted in another order, otherwise equal


def test_min_area_and_annotations_and_several_classes(tmp_path: Path) -> None:
    labels, _ = known_map()
    out = tmp_path / "o.geojson"
    smallest = math.pi * 6 ** 2 * MPP * MPP
    result = export_label_source(source_of(labels, None), out, classes=["gland", "stroma"], objects=True,
                                 min_area_um2=smallest + 5)
    data = load(out)
    rows = read_table(out.with_name("o.objects.csv"))
    assert result.regions_per_class == {"gland": len(DISCS) + 3, "stroma": 1}
    assert sorted(r["class"] for r in rows) == ["gland"] * (len(DISCS) + 3) + ["stroma"]
    assert all(f["properties"]["objectType"] == "annotation" for f in data["features"])
    assert "Mean probability" not in rows[0] and "Max probability" not in data["features"][0]["properties"][
        "measurements"]


def test_cli_export_objects(make_segmentation: Callable[..., Path], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    labels, _ = known_map()
    seg = make_segmentation(labels, known_probabilities(labels), classes=CLASSES)
    out = tmp_path / "cli.geojson"
    main(["export", str(seg), "--geojson", str(out), "--objects", "gland"])
    printed = capsys.readouterr().out
    assert "object table" in printed and out.with_name("cli.objects.csv").is_file()
    data = load(out)
    assert len(data["features"]) == len(DISCS) + 4
    assert {f["properties"]["objectType"] for f in data["features"]} == {"detection"}
    with pytest.raises(SystemExit):
        main(["export", str(seg), "--geojson", str(out), "--objects", "gland", "--classes", "stroma"])


def test_export_geojson_objects_on_a_pyramid(make_segmentation: Callable[..., Path], tmp_path: Path) -> None:
    """From an OME-Zarr: coordinates in slide level-0 pixels, measurements in um of the traced level."""
    labels, _ = known_map()
    seg = make_segmentation(labels, known_probabilities(labels), classes=CLASSES)
    result = export_geojson(seg, tmp_path / "z.geojson", classes=["gland"], objects=True)
    rows = read_table(result.table) if result.table else []
    comps = components(labels == GLAND, connectivity=1)
    areas = sorted(p.area * 0.5 * 0.5 for p in regionprops(comps))  # the fixture's 0.5 um/px
    assert sorted(float(r["Area um^2"]) for r in rows) == pytest.approx(areas, abs=1e-3)


def test_spatialdata_without_the_extra_is_one_line(make_segmentation: Callable[..., Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """In the main environment (no spatialdata: it pins an older dask) the export says what to install."""
    import importlib.util

    if importlib.util.find_spec("spatialdata") is not None:
        pytest.skip("spatialdata is installed here; tests/export/test_spatialdata.py covers the export")
    labels, _ = known_map()
    seg = make_segmentation(labels, known_probabilities(labels), classes=CLASSES)
    with pytest.raises(SystemExit) as exc:
        main(["export", str(seg), "--spatialdata", str(tmp_path / "sd.zarr")])
    err = capsys.readouterr().err
    assert exc.value.code != 0 and err.count("\n") == 1 and 'pip install "wsiseg[spatialdata]"' in err
    with pytest.raises(SystemExit):
        main(["export", str(seg)])  # no output named
