"""GeoJSON in: regions of interest and ground truth drawn in QuPath (or any GeoJSON) -> rasters.

Reads ``.geojson``, ``.json`` and gzip-compressed files (detected by content, e.g. ``.geojson.gz``)
holding a FeatureCollection, a list of Features (older QuPath exports), a single Feature or a bare
geometry. Coordinates are slide level-0 pixels (QuPath's convention). Polygons and MultiPolygons (with
holes) are used; points and lines carry no area and are skipped.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import shape

from wsiseg.classes import ClassList
from wsiseg.errors import ClassMismatchError, ConfigError, GeoJSONError


@dataclass(frozen=True)
class GeoJSONRegion:
    """One polygonal object: its geometry (level-0 pixels) and QuPath classification name (or None)."""

    geometry: shapely.Geometry
    classification: str | None


def _load(path: Path) -> Any:
    if not path.is_file():
        raise GeoJSONError(f"GeoJSON file not found: {path}")
    try:
        with open(path, "rb") as fh:
            compressed = fh.read(2) == b"\x1f\x8b"
        opener = gzip.open if compressed else open
        with opener(path, "rt", encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise GeoJSONError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}") from exc
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise GeoJSONError(f"cannot read GeoJSON {path}: {exc}") from exc


def _classification(props: Any) -> str | None:
    if not isinstance(props, dict):
        return None
    cls = props.get("classification")
    if isinstance(cls, dict):
        if isinstance(cls.get("name"), str):
            return str(cls["name"])
        names = cls.get("names")
        if isinstance(names, list) and names:
            return ": ".join(str(n) for n in names)  # QuPath derived classes, e.g. "Tumor: Positive"
    if isinstance(cls, str):
        return cls
    return None


def _features(data: Any, path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(feature number, geometry dict, classification) of every feature."""
    items: Any
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        items = data.get("features")
        if not isinstance(items, list):
            raise GeoJSONError(f"{path}: FeatureCollection has no 'features' list")
    elif isinstance(data, dict) and ("type" in data):
        items = [data]
    else:
        raise GeoJSONError(f"{path} is not GeoJSON (expected a FeatureCollection, Feature or geometry)")
    for number, item in enumerate(items):
        if not isinstance(item, dict) or "type" not in item:
            raise GeoJSONError(f"{path}: feature {number} is not a GeoJSON object")
        if item["type"] == "Feature":
            yield number, item.get("geometry"), _classification(item.get("properties"))
        else:
            yield number, item, None


def read_geojson_regions(path: str | Path) -> list[GeoJSONRegion]:
    """Every polygonal object of a GeoJSON file, in file order; invalid polygons are repaired
    (``make_valid``, polygonal part kept). Raises :class:`GeoJSONError` when there is none."""
    file = Path(path)
    regions: list[GeoJSONRegion] = []
    for number, geometry, name in _features(_load(file), file):
        if geometry is None:
            continue
        try:
            geom = shape(geometry)
        except Exception as exc:  # shapely raises several types on malformed coordinates
            raise GeoJSONError(f"{file}: feature {number} has a malformed geometry: "
                               f"{' '.join(str(exc).split()) or type(exc).__name__}") from exc
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        polygons = [p for p in shapely.get_parts(geom)
                    if isinstance(p, (shapely.Polygon, shapely.MultiPolygon)) and not p.is_empty]
        for poly in polygons:
            regions.append(GeoJSONRegion(poly, name))
    if not regions:
        raise GeoJSONError(f"{file} contains no Polygon or MultiPolygon")
    return regions


def _transform(downsample: float | tuple[float, float]) -> Affine:
    dx, dy = (downsample, downsample) if isinstance(downsample, (int, float)) else downsample
    if not (dx > 0 and dy > 0):
        raise ConfigError(f"downsample must be positive, got {downsample}")
    return Affine.scale(float(dx), float(dy))


def geojson_to_mask(path: str | Path, width: int, height: int,
                    downsample: float | tuple[float, float] = 1.0, *,
                    origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Rasterise all polygons of a GeoJSON file into a ``(height, width)`` bool mask.

    Pixel ``(row, col)`` of the mask covers level-0 pixels ``[col * downsample, (col + 1) * downsample)``
    (likewise rows); it is True when its centre lies inside a polygon (holes excluded). ``downsample``:
    level-0 pixels per mask pixel, one number or ``(x, y)``. ``origin``: the level-0 ``(x, y)`` of the
    file's coordinate origin (the slide's bounds offset for a QuPath export of a cropped slide, see
    :mod:`wsiseg.frames`).
    """
    return regions_to_mask(read_geojson_regions(path), width, height, downsample, origin=origin)


def regions_to_mask(regions: list[GeoJSONRegion], width: int, height: int,
                    downsample: float | tuple[float, float] = 1.0, *,
                    origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Rasterise ``regions`` into a ``(height, width)`` bool mask (pixel geometry and ``origin`` as in
    :func:`geojson_to_mask`); no regions: all False."""
    if not regions:
        return np.zeros((int(height), int(width)), bool)
    transform = Affine.translation(-origin[0], -origin[1]) @ _transform(downsample)
    mask = rasterio.features.rasterize(
        ((r.geometry, 1) for r in regions), out_shape=(int(height), int(width)),
        transform=transform, fill=0, dtype=np.uint8,
    )
    return np.asarray(mask, dtype=bool)


def geojson_to_labels(path: str | Path, classes: ClassList, width: int, height: int,
                      downsample: float | tuple[float, float] = 1.0, *,
                      ignore_unknown: bool = False) -> np.ndarray:
    """Rasterise classified polygons into a ``(height, width)`` map of class indices of ``classes``.

    Unlabelled pixels (and unclassified objects) get ``classes.ignore_index``; where objects overlap,
    the later one in the file wins. Classification names must be in ``classes`` (a
    :class:`ClassMismatchError` lists the unknown ones) unless ``ignore_unknown``. Pixel geometry as in
    :func:`geojson_to_mask`. dtype uint8 (int32 when the ignore index is outside 0..255).
    """
    regions = read_geojson_regions(path)
    known = set(classes.names)
    unknown = sorted({r.classification for r in regions if r.classification is not None
                      and r.classification not in known})
    if unknown and not ignore_unknown:
        raise ClassMismatchError(f"{path}: classifications {', '.join(unknown)} are not among the classes "
                                 f"{', '.join(classes.names)}")
    dtype = np.uint8 if 0 <= classes.ignore_index <= 255 else np.int32
    shapes = [(r.geometry, classes.index(r.classification)) for r in regions
              if r.classification is not None and r.classification in known]
    if not shapes:
        return np.full((int(height), int(width)), classes.ignore_index, dtype=dtype)
    labels = rasterio.features.rasterize(
        shapes, out_shape=(int(height), int(width)), transform=_transform(downsample),
        fill=classes.ignore_index, dtype=dtype,
    )
    return np.asarray(labels)
