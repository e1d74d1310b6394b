"""SpatialData export, read back with ``spatialdata.read_zarr``: element types, the micrometre coordinate
system aligned with the slide, labels and probabilities equal to the segmentation's, the objects' shapes
and the table's rows one to one.

spatialdata pins an older dask than wsiseg's own environment, so these tests run in a second environment
with the ``spatialdata`` extra (``make test-spatialdata``, part of CI); elsewhere they skip."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from wsiseg.errors import ConfigError, OutputError

from .test_objects import CLASSES, GLAND, known_map, known_probabilities

spatialdata = pytest.importorskip("spatialdata")


@pytest.fixture
def store(make_segmentation: Callable[..., Path], tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    from wsiseg.export.spatialdata import export_spatialdata

    labels, _ = known_map()
    probs = known_probabilities(labels)
    seg = make_segmentation(labels, probs, classes=CLASSES)
    out = export_spatialdata(seg, tmp_path / "sd.zarr", objects=["gland"], probabilities=["gland", "stroma"])
    return out, labels, probs


def test_read_back(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    from skimage.measure import label as components
    from spatialdata.transformations import Identity, Scale, get_transformation

    out, labels, probs = store
    sdata = spatialdata.read_zarr(out)
    assert set(sdata.labels) == {"classes"} and set(sdata.images) == {"probabilities"}
    assert set(sdata.shapes) == {"regions", "objects"} and set(sdata.tables) == {"measurements"}
    level0 = sdata.labels["classes"]["scale0"]["image"]
    assert np.array_equal(np.asarray(level0), labels)
    image = sdata.images["probabilities"]["scale0"]["image"]
    assert list(image.coords["c"].values) == ["gland", "stroma"]
    assert np.array_equal(np.asarray(image), probs[[0, 1]])
    scale = get_transformation(sdata.labels["classes"], "global")
    assert isinstance(scale, Scale) and list(scale.scale) == [0.5, 0.5]  # the fixture's output um/px
    assert isinstance(get_transformation(sdata.shapes["objects"], "global"), Identity)

    objects, table = sdata.shapes["objects"], sdata.tables["measurements"]
    n = int(components(labels == GLAND, connectivity=1).max())
    assert len(objects) == table.n_obs == n
    assert list(table.obs["instance_id"]) == list(objects.index)
    assert list(table.obs["object_id"]) == list(objects["object_id"])
    assert table.uns["spatialdata_attrs"]["region"] == "objects"
    # micrometres: each object's polygon area equals its measured area (exact pixel-edge polygons)
    areas = table[:, "Area um^2"].X.ravel()
    assert np.allclose(objects.geometry.area.to_numpy(), areas, rtol=1e-3)  # 0.01 px coordinate rounding
    # aligned: an object's bounds in um are its pixels' bounds at 0.5 um/px
    comps = components(labels == GLAND, connectivity=1)
    first = objects.geometry.iloc[0]
    x0, y0, x1, y1 = first.bounds
    inside = first.representative_point()
    ys, xs = np.nonzero(comps == comps[int(inside.y / 0.5), int(inside.x / 0.5)])
    assert (x0, y0, x1, y1) == pytest.approx((xs.min() * 0.5, ys.min() * 0.5, (xs.max() + 1) * 0.5,
                                              (ys.max() + 1) * 0.5), abs=0.01)
    regions = sdata.shapes["regions"]
    assert set(regions["class"]) == set(CLASSES.names)


def test_errors(store: tuple[Path, np.ndarray, np.ndarray], make_segmentation: Callable[..., Path]) -> None:
    from wsiseg.export.spatialdata import export_spatialdata

    out, labels, _ = store
    seg = make_segmentation(labels)
    with pytest.raises(OutputError, match="exists"):
        export_spatialdata(seg, out)
    with pytest.raises(ConfigError, match="no class 'glands'"):
        export_spatialdata(seg, out, objects=["glands"], overwrite=True)
    assert export_spatialdata(seg, out, overwrite=True, probabilities=[]) == out
    assert not (out / "images").exists() or not any((out / "images").iterdir())


def test_cli(make_segmentation: Callable[..., Path], tmp_path: Path,
             capsys: pytest.CaptureFixture[str]) -> None:
    from wsiseg.cli import main

    labels, _ = known_map()
    seg = make_segmentation(labels, known_probabilities(labels), classes=CLASSES)
    out = tmp_path / "cli.zarr"
    main(["export", str(seg), "--spatialdata", str(out), "--objects", "gland", "--probabilities", "none",
          "--min-area", "20"])
    assert "SpatialData" in capsys.readouterr().out
    sdata = spatialdata.read_zarr(out)
    assert not sdata.images and len(sdata.shapes["objects"]) == sdata.tables["measurements"].n_obs
    assert (sdata.tables["measurements"][:, "Area um^2"].X >= 20).all()


def test_plots_with_spatialdata_plot(store: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    """spatialdata-plot draws the labels and the objects coloured by a measurement of the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import spatialdata_plot  # noqa: F401  (registers the .pl accessor)

    out, _, _ = store
    sdata = spatialdata.read_zarr(out)
    figure = tmp_path / "plot.png"
    (sdata.pl.render_labels("classes")
     .pl.render_shapes("objects", color="Circularity", table_name="measurements")
     .pl.show(coordinate_systems="global", save=str(figure)))
    plt.close("all")
    assert figure.stat().st_size > 5_000
