"""Regions -> QuPath-ready GeoJSON, streamed feature by feature (``.geojson`` or gzip ``.geojson.gz``).

Each feature follows QuPath's GeoJSON import (``../shared/REFERENCE.md`` section 7)::

    {"type": "Feature", "id": "<uuid5>", "geometry": {...level-0 pixels of the chosen frame...},
     "properties": {"objectType": "annotation" | "detection",
                    "classification": {"name": "tumour", "color": [r, g, b]},
                    "name": "tumour", "isLocked": false,
                    "measurements": {"Area um^2": 123.4, "Mean probability": 0.87}}}

The FeatureCollection may carry a top-level ``"properties": {"wsiseg": {...}}`` (a GeoJSON foreign
member: the coordinate frame and its origin, the run); QuPath's import reads only ``features`` and
ignores it (``PathObjectTypeAdapters.PathObjectCollectionTypeAdapter.read``).

Ids are UUID version 5 of (slide and segmentation run, class, level, first pixel of the region; for
class features the split tile), so re-exporting one segmentation gives the same ids whatever the block
size, and another segmentation of the same slide gives other ids.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

import numpy as np
import shapely

from wsiseg.classes import ClassList

#: Namespace of the UUID-5 feature ids written by wsiseg.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/wsiseg/wsiseg/geojson")
#: Decimals kept for level-0 pixel coordinates (0.01 px; monotone rounding keeps pixel-edge polygons valid).
COORDINATE_DECIMALS = 2
AREA_MEASUREMENT = "Area um^2"
PROBABILITY_MEASUREMENT = "Mean probability"


class ObjectType(str, Enum):
    """QuPath object type of the exported features."""

    ANNOTATION = "annotation"
    DETECTION = "detection"


def is_gzip_name(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def open_text(path: Path, mode: str, gzipped: bool) -> IO[str]:
    """Open a UTF-8 text file, gzip-compressed when ``gzipped``."""
    if gzipped:
        return cast(IO[str], gzip.open(path, mode + "t", encoding="utf-8", compresslevel=6))
    return open(path, mode, encoding="utf-8")


def feature_id(identity: str, class_name: str, level: int, region: str) -> str:
    """Stable UUID of one exported object; ``identity``: the slide and run (``LabelSource.identity``)."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{identity}|{class_name}|level{level}|{region}"))


def properties(class_name: str, color: tuple[int, int, int], object_type: ObjectType, area_um2: float,
               mean_probability: float | None) -> dict[str, Any]:
    """QuPath ``properties`` of one feature."""
    measurements: dict[str, float] = {AREA_MEASUREMENT: round(float(area_um2), 3)}
    if mean_probability is not None:
        measurements[PROBABILITY_MEASUREMENT] = round(float(mean_probability), 4)
    return {
        "objectType": object_type.value,
        "classification": {"name": class_name, "color": [int(c) for c in color]},
        "name": class_name,
        "isLocked": False,
        "measurements": measurements,
    }


def _coordinates_json(geometry_json: str) -> str:
    """The ``coordinates`` member of a GEOS GeoJSON Polygon/MultiPolygon string, as polygon list items."""
    head, _, rest = geometry_json.partition('"coordinates":')
    body = rest[:-1]  # drop the closing brace of the geometry object
    if '"MultiPolygon"' in head:
        return body[1:-1]  # its polygons, comma-separated
    return body


def _integral(geometry_json: str) -> str:
    """Write whole-number coordinates as integers (GEOS writes ``12.0``): a quarter smaller files."""
    return geometry_json.replace(".0,", ",").replace(".0]", "]")


@dataclass
class _ClassAccumulator:
    n_regions: int = 0
    weight: float = 0.0
    probability_sum: float = 0.0
    area_um2: float = 0.0
    handle: IO[str] | None = None


@dataclass
class GeoJSONWriter:
    """Writes a FeatureCollection to ``path`` (atomically: ``<path>.partial`` then renamed on close).

    ``split_regions``: one Polygon feature per region, written as soon as it is added; otherwise one
    MultiPolygon feature per class and split tile (``tiled``; one per class when the map is one tile),
    whose polygons are spooled to a temporary file per class (next to the output) and written when the
    tile is done (regions arrive tile by tile), so memory never holds more than one batch.
    ``identity``: slide and run, for the ids; ``collection_properties``: written as the
    FeatureCollection's top-level ``properties`` when given.
    """

    path: Path
    classes: ClassList
    identity: str
    level: int
    object_type: ObjectType = ObjectType.ANNOTATION
    split_regions: bool = False
    has_probabilities: bool = True
    tiled: bool = False
    collection_properties: dict[str, Any] | None = None
    n_features: int = 0
    _out: IO[str] | None = None
    _spool: tempfile.TemporaryDirectory[str] | None = None
    _per_class: dict[int, _ClassAccumulator] = field(default_factory=dict)
    _tile: tuple[int, int] | None = None

    @property
    def partial_path(self) -> Path:
        return self.path.with_name(self.path.name + ".partial")

    def __enter__(self) -> GeoJSONWriter:
        self._out = open_text(self.partial_path, "w", gzipped=is_gzip_name(self.path))
        self._out.write('{"type":"FeatureCollection",')
        if self.collection_properties is not None:
            self._out.write(f'"properties":{json.dumps(self.collection_properties)},')
        self._out.write('"features":[\n')
        if not self.split_regions:
            self._spool = tempfile.TemporaryDirectory(prefix=".wsiseg-export-", dir=self.path.parent)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            for acc in self._per_class.values():
                if acc.handle is not None:
                    acc.handle.close()
            if self._out is not None:
                self._out.close()
            if self._spool is not None:
                self._spool.cleanup()
            if exc_type is None:
                self.partial_path.replace(self.path)
            else:
                self.partial_path.unlink(missing_ok=True)

    def _write_feature(self, text: str) -> None:
        assert self._out is not None
        if self.n_features:
            self._out.write(",\n")
        self._out.write(text)
        self.n_features += 1

    def add(self, geometries: np.ndarray, class_indices: np.ndarray, weight: np.ndarray,
            area_um2: np.ndarray, mean_probability: np.ndarray | None, first_pixel: np.ndarray,
            tile: tuple[int, int] = (0, 0)) -> None:
        """Add regions: geometries (in the output frame), class indices, weights of their mean
        probabilities (pixels measured), areas, mean probabilities (0..1, or None), first pixels ``(n, 2)``
        ``(y, x)`` at the traced level and the split tile ``(y, x)`` they come from. Class features of a
        tile are written when regions of another tile arrive, or on close."""
        if self._tile is not None and tile != self._tile and not self.split_regions:
            self._flush_tile()
        self._tile = tile
        texts = shapely.to_geojson(geometries)
        for i, geojson_text in enumerate(texts.tolist()):
            text = _integral(geojson_text)
            cls = self.classes.classes[int(class_indices[i])]
            if self.split_regions:
                fy, fx = int(first_pixel[i, 0]), int(first_pixel[i, 1])
                props = properties(cls.name, cls.color, self.object_type, float(area_um2[i]),
                                   None if mean_probability is None else float(mean_probability[i]))
                fid = feature_id(self.identity, cls.name, self.level, f"{fy},{fx}")
                self._write_feature(
                    f'{{"type":"Feature","id":"{fid}","geometry":{text},"properties":{json.dumps(props)}}}')
            else:
                acc = self._per_class.setdefault(int(class_indices[i]), _ClassAccumulator())
                if acc.handle is None:
                    assert self._spool is not None
                    spool_file = Path(self._spool.name) / f"{int(class_indices[i])}.part"
                    acc.handle = open(spool_file, "w+", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
                if acc.n_regions:
                    acc.handle.write(",")
                acc.handle.write(_coordinates_json(text))
                acc.n_regions += 1
                acc.weight += float(weight[i])
                acc.area_um2 += float(area_um2[i])
                if mean_probability is not None:
                    acc.probability_sum += float(mean_probability[i]) * float(weight[i])

    def _flush_tile(self) -> None:
        """Write the class features of the current tile and empty the spools for the next one."""
        assert self._out is not None
        region = "all" if not self.tiled or self._tile is None else f"tile{self._tile[0]},{self._tile[1]}"
        for index in sorted(self._per_class):
            acc = self._per_class[index]
            if acc.handle is None or acc.n_regions == 0:
                continue
            cls = self.classes.classes[index]
            mean = (acc.probability_sum / acc.weight if self.has_probabilities and acc.weight else None)
            props = properties(cls.name, cls.color, self.object_type, acc.area_um2, mean)
            fid = feature_id(self.identity, cls.name, self.level, region)
            self._write_feature(f'{{"type":"Feature","id":"{fid}","properties":{json.dumps(props)},'
                                '"geometry":{"type":"MultiPolygon","coordinates":[')
            acc.handle.seek(0)
            shutil.copyfileobj(acc.handle, self._out, length=1 << 20)
            self._out.write("]}}")
            acc.handle.seek(0)
            acc.handle.truncate()
            acc.n_regions, acc.weight, acc.probability_sum, acc.area_um2 = 0, 0.0, 0.0, 0.0

    def _finish(self) -> None:
        assert self._out is not None
        if not self.split_regions:
            self._flush_tile()
        self._out.write("\n]}\n")
