"""A segmentation as a SpatialData object (scverse): what LazySlide, wsidata and spatialdata-plot read.

Elements, all in one coordinate system, :data:`COORDINATE_SYSTEM`, in micrometres with (0, 0) at the
slide's level-0 corner (OpenSlide's frame):

- labels ``classes``: the class label pyramid (0 = not analysed, ``i + 1`` = class ``i``), scaled by the
  output's um/px;
- images ``probabilities``: the class probabilities (uint8 0..255), all classes or a chosen subset, one
  named channel each;
- shapes ``regions``: the class regions (one row per class and split tile, column ``class``) and
  ``objects``: every connected region of the object classes (:mod:`wsiseg.export.objects`), index =
  the table's ``instance_id``;
- table ``measurements``: an AnnData of the objects' measurements (``X``, one variable per measurement),
  ``obs`` with ``object_id`` (the GeoJSON id), ``class``, ``region`` = ``objects`` and ``instance_id``,
  annotating the ``objects`` shapes.

Needs the optional extra ``pip install "wsiseg[spatialdata]"`` (kept apart: spatialdata 0.7 pins
``dask < 2026.1.2``).
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape

from wsiseg.errors import ConfigError, OutputError, option
from wsiseg.export._source import LabelSource, open_label_source
from wsiseg.export.exporter import export_label_source
from wsiseg.frames import CoordinateFrame

#: the coordinate system every element is placed in (spatialdata's default name), in micrometres
COORDINATE_SYSTEM = "global"
TABLE = "measurements"


def _spatialdata() -> Any:
    try:
        import spatialdata
    except ImportError:
        raise ConfigError("SpatialData export needs the spatialdata package: "
                          'pip install "wsiseg[spatialdata]"') from None
    return spatialdata


def export_spatialdata(zarr_path: str | Path, out_path: str | Path, *, objects: Sequence[str] = (),
                       probabilities: Sequence[str] | None = None, min_area_um2: float = 0.0,
                       overwrite: bool = False) -> Path:
    """Write the segmentation at ``zarr_path`` as a SpatialData store at ``out_path`` (module docstring).

    ``objects``: classes whose connected regions become the ``objects`` shapes and the ``measurements``
    table (none: neither); ``probabilities``: classes whose probability channels are written (None: all;
    empty: no image); ``min_area_um2``: objects smaller than this are left out. An existing ``out_path``
    is replaced only with ``overwrite``. Returns ``out_path``."""
    sd = _spatialdata()
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; pass {option('overwrite', flag=True)} to replace it")
    source = open_label_source(zarr_path, level=0)
    names = list(source.classes.names)
    unknown = [c for c in [*objects, *(probabilities or [])] if c not in names]
    if unknown:
        raise ConfigError(f"no class {', '.join(map(repr, unknown))} in the segmentation (classes: "
                          f"{', '.join(names)})")
    elements: dict[str, dict[str, Any]] = {"labels": {"classes": _labels(source)}, "images": {},
                                           "shapes": {}, "tables": {}}
    chosen = names if probabilities is None else list(probabilities)
    if chosen and source.probabilities is not None:
        elements["images"]["probabilities"] = _probabilities(source, chosen)
    with tempfile.TemporaryDirectory(prefix="wsiseg-sd-") as tmp:
        regions, _ = _traced(source, Path(tmp) / "regions.geojson", objects=False, classes=None)
        elements["shapes"]["regions"] = regions
        if objects:
            shapes, table = _traced(source, Path(tmp) / "objects.geojson", objects=True,
                                    classes=list(objects), min_area_um2=min_area_um2)
            elements["shapes"]["objects"] = shapes
            elements["tables"][TABLE] = _table(table, len(shapes))
    data = sd.SpatialData(**elements)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    data.write(partial)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out


def _scale(source: LabelSource) -> Any:
    from spatialdata.transformations import Scale

    return Scale([source.mpp_y, source.mpp_x], axes=("y", "x"))


def _pyramid(n_levels: int) -> list[int] | None:
    return [2] * (n_levels - 1) or None


def _lazy(array: Any) -> Any:
    """A dask array over a zarr array (read chunk by chunk when written) or a numpy one."""
    import dask.array as da

    if isinstance(array, np.ndarray):
        return da.from_array(array)  # type: ignore[no-untyped-call]
    return da.from_zarr(array)  # type: ignore[no-untyped-call]


def _labels(source: LabelSource) -> Any:
    from spatialdata.models import Labels2DModel

    return Labels2DModel.parse(_lazy(source.labels), dims=("y", "x"),
                               scale_factors=_pyramid(source.n_levels),
                               transformations={COORDINATE_SYSTEM: _scale(source)})


def _probabilities(source: LabelSource, chosen: list[str]) -> Any:
    from spatialdata.models import Image2DModel

    assert source.probabilities is not None
    array = _lazy(source.probabilities)
    channels = [source.classes.names.index(c) for c in chosen]
    return Image2DModel.parse(array[channels], dims=("c", "y", "x"), c_coords=chosen,
                              scale_factors=_pyramid(source.n_levels),
                              transformations={COORDINATE_SYSTEM: _scale(source)})


def _traced(source: LabelSource, path: Path, *, objects: bool, classes: list[str] | None,
            min_area_um2: float = 0.0) -> tuple[Any, Path | None]:
    """Export to a GeoJSON in OpenSlide's frame and read it back as shapes in micrometres (the slide's
    level-0 um/px); returns (shapes, the object table or None)."""
    import geopandas as gpd
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity

    result = export_label_source(source, path, classes=classes, objects=objects, min_area_um2=min_area_um2,
                                 frame=CoordinateFrame.OPENSLIDE, max_bytes=0)
    um0 = (source.mpp_x / source.downsample_x, source.mpp_y / source.downsample_y)
    features = json.loads(path.read_text(encoding="utf-8"))["features"]
    geometries = shapely.transform(np.array([shape(f["geometry"]) for f in features], dtype=object),
                                   lambda c: c * np.array(um0))
    frame = gpd.GeoDataFrame({"class": [f["properties"]["classification"]["name"] for f in features],
                              "object_id": [f["id"] for f in features]}, geometry=list(geometries))
    shapes = ShapesModel.parse(frame, transformations={COORDINATE_SYSTEM: Identity()})
    return shapes, result.table


def _table(path: Path | None, n_objects: int) -> Any:
    """The objects' measurements as a SpatialData table annotating the ``objects`` shapes (rows in the
    shapes' order: both come from one export)."""
    import anndata
    import pandas as pd
    from spatialdata.models import TableModel

    assert path is not None
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != n_objects:
        raise OutputError(f"{path}: {len(rows)} rows for {n_objects} objects")
    from wsiseg.export.objects import TABLE_KEYS

    variables = [k for k in (rows[0] if rows else {}) if k not in TABLE_KEYS]
    x = np.array([[float(r[v]) for v in variables] for r in rows], dtype=np.float32).reshape(len(rows), -1)
    obs = pd.DataFrame({"object_id": [r["object_id"] for r in rows],
                        "class": pd.Categorical([r["class"] for r in rows]),
                        "region": pd.Categorical(["objects"] * len(rows)),
                        "instance_id": np.arange(len(rows))})
    obs.index = obs.index.astype(str)
    table = anndata.AnnData(X=x, obs=obs, var=pd.DataFrame(index=variables))
    return TableModel.parse(table, region="objects", region_key="region", instance_key="instance_id")
