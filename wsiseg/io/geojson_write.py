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
from shapely.geometry import shape

from wsiseg.classes import ClassList

#: Namespace of the UUID-5 feature ids written by wsiseg.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/wsiseg/wsiseg/geojson")
#: Decimals kept for level-0 pixel coordinates (0.01 px; monotone rounding keeps pixel-edge polygons valid).
COORDINATE_DECIMALS = 2
#: Polygons per class feature at most: QuPath 0.6 needed more than a 4 GiB heap for one feature of 200k
#: parts and no more than 0.5.1 does for features of up to 10k (docs/qupath-import.md).
DEFAULT_MAX_PARTS = 10_000
#: Uncompressed bytes per GeoJSON file at most: QuPath holds a whole file as a JSON tree, 22-32 MB of heap
#: per MB of file; 50 MB imports in a 1.5 GiB heap, in seconds (0.5.1) to ~2.5 min (0.6.0)
#: (docs/qupath-import.md).
DEFAULT_MAX_BYTES = 50_000_000
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
               mean_probability: float | None, classification: str | None = None,
               extra: dict[str, float] | None = None) -> dict[str, Any]:
    """QuPath ``properties`` of one feature (``classification``: the QuPath class when it is not the class
    name, e.g. ``Artifact: pen``; ``extra``: further measurements, e.g. an object's)."""
    measurements: dict[str, float] = {AREA_MEASUREMENT: round(float(area_um2), 3)}
    if mean_probability is not None:
        measurements[PROBABILITY_MEASUREMENT] = round(float(mean_probability), 4)
    for name, value in (extra or {}).items():
        measurements.setdefault(name, round(float(value), 4))
    return {
        "objectType": object_type.value,
        "classification": {"name": classification or class_name, "color": [int(c) for c in color]},
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


#: The endings of GeoJSON file names, longest first.
GEOJSON_ENDINGS = (".geojson.gz", ".json.gz", ".geojson", ".json")


def split_geojson_name(path: Path, endings: tuple[str, ...] = GEOJSON_ENDINGS) -> tuple[str, str]:
    """``(stem, ending)`` of a GeoJSON file name: ``slide.geojson.gz`` -> ``("slide", ".geojson.gz")``
    (the ending as written, matched case-insensitively; ``""`` when none of ``endings`` matches)."""
    lower = path.name.lower()
    ext = next((e for e in endings if lower.endswith(e)), "")
    return path.name[:len(path.name) - len(ext)], path.name[len(path.name) - len(ext):]


def part_path(path: Path, number: int) -> Path:
    """File ``number`` (1-based) of an export to ``path``: ``path`` itself, then ``<name>-002<ext>``,
    ``<name>-003<ext>``, ... (``ext``: ``.geojson``, ``.json``, optionally with ``.gz``)."""
    if number == 1:
        return path
    base, ext = split_geojson_name(path, (*GEOJSON_ENDINGS, ".gz"))
    return path.with_name(f"{base}-{number:03d}{ext}")
#: How every file this writer produces begins (before ``"wsiseg"``'s contents): how a stale part of an
#: earlier export is recognised before it is removed.
_HEAD = '{"type":"FeatureCollection","properties":{"wsiseg":'


def _written_by_wsiseg(path: Path) -> bool:
    """Does ``path`` hold a GeoJSON file this writer wrote (checked on its first bytes)?"""
    try:
        with open_text(path, "r", gzipped=is_gzip_name(path)) as fh:
            return fh.read(len(_HEAD)) == _HEAD
    except (OSError, EOFError, UnicodeDecodeError):
        return False


@dataclass
class _ClassAccumulator:
    """The polygons of one class waiting in its spool file for the current split tile."""

    n_parts: int = 0
    n_chars: int = 0
    chunk: int = 1
    weight: float = 0.0
    probability_sum: float = 0.0
    area_um2: float = 0.0
    handle: IO[str] | None = None


@dataclass
class GeoJSONWriter:
    """Writes a FeatureCollection to ``path`` (atomically: ``<path>.partial`` then renamed on close).

    ``split_regions``: one feature per region, written as soon as it is added; otherwise one feature per
    class and split tile (``tiled``; one per class when the map is one tile) whose polygons are spooled to
    a temporary file per class (next to the output) and written when the tile is done (regions arrive
    tile by tile), so memory never holds more than one batch. ``identity``: slide and run, for the ids;
    ``collection_properties``: written as the FeatureCollection's top-level ``properties`` when given.

    What QuPath can import (REFERENCE.md section 11, measured with its own import code in
    docs/qupath-import.md): a geometry of one polygon is written as ``Polygon`` (QuPath 0.5 fails the
    whole file on a one-part ``MultiPolygon``), ``MultiPolygon`` only for two or more. A class feature
    holds at most ``max_parts`` polygons: a class with more regions in one split tile is written as
    several features (``metadata`` ``wsiseg.part`` 2, 3, ...; one region is never divided, and regions
    are one polygon except where clipping cut one into a few). ``max_bytes`` (0 = no limit) bounds the
    uncompressed size of one file: when the next feature would pass it, the file is closed and the export
    goes on in ``part_path(path, 2)``, ``3``, ... (a single larger feature has a file to itself); every
    file is a complete FeatureCollection whose ``properties.wsiseg.file`` numbers it. ``paths`` lists
    the files written; files of an earlier export to the same ``path`` beyond them are removed.
    ``check_assembled``: parse each written class feature back and check its whole geometry with
    shapely's ``is_valid`` (repairing it with ``make_valid`` if needed, counted in ``n_repaired``).
    ``qupath_names``: the QuPath classification per class index where it is not the class name.
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
    max_parts: int = DEFAULT_MAX_PARTS
    max_bytes: int = DEFAULT_MAX_BYTES
    check_assembled: bool = False
    qupath_names: tuple[str, ...] | None = None
    n_features: int = 0
    n_repaired: int = 0
    paths: list[Path] = field(default_factory=list)
    _out: IO[str] | None = None
    _file_chars: int = 0
    _file_features: int = 0
    _spool: tempfile.TemporaryDirectory[str] | None = None
    _per_class: dict[int, _ClassAccumulator] = field(default_factory=dict)
    _tile: tuple[int, int] | None = None
    _tile_bounds: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.max_parts < 1:
            raise ValueError("max_parts must be at least 1")
        if self.max_bytes < 0:
            raise ValueError("max_bytes must be 0 (no limit) or positive")

    @property
    def partial_path(self) -> Path:
        """Where the first file is written until the export completes."""
        return _partial(self.path)

    def __enter__(self) -> GeoJSONWriter:
        self._begin_file()
        if not self.split_regions:
            self._spool = tempfile.TemporaryDirectory(prefix=".wsiseg-export-", dir=self.path.parent)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                if not self.split_regions:
                    self._flush_tile()
                self._end_file()
        finally:
            for acc in self._per_class.values():
                if acc.handle is not None:
                    acc.handle.close()
            if self._out is not None:
                self._out.close()
            if self._spool is not None:
                self._spool.cleanup()
            if exc_type is None:
                for path in self.paths:
                    _partial(path).replace(path)
                self._remove_stale_parts()
            else:
                for path in self.paths:
                    _partial(path).unlink(missing_ok=True)

    def _begin_file(self) -> None:
        path = part_path(self.path, len(self.paths) + 1)
        self.paths.append(path)
        self._out = open_text(_partial(path), "w", gzipped=is_gzip_name(self.path))
        head = '{"type":"FeatureCollection",'
        if self.collection_properties is not None:
            props = dict(self.collection_properties)
            if isinstance(props.get("wsiseg"), dict):
                props["wsiseg"] = {**props["wsiseg"], "file": len(self.paths)}
            head += f'"properties":{json.dumps(props)},'
        head += '"features":[\n'
        self._out.write(head)
        self._file_chars, self._file_features = len(head), 0

    def _end_file(self) -> None:
        assert self._out is not None
        self._out.write("\n]}\n")
        self._out.close()
        self._out = None

    def _remove_stale_parts(self) -> None:
        """Remove the further files of an earlier, larger export to the same path (only files this writer
        wrote: recognised by their first bytes), so a directory never mixes two exports."""
        number = len(self.paths) + 1
        while (stale := part_path(self.path, number)).is_file() and _written_by_wsiseg(stale):
            stale.unlink()
            number += 1

    def _start_feature(self, n_chars: int) -> IO[str]:
        """Place the next feature (``n_chars`` long): in a new file when it would take the current one past
        ``max_bytes`` (never leaving a file empty). Returns the handle to write it to."""
        if self._file_features and self.max_bytes and self._file_chars + n_chars + 2 > self.max_bytes:
            self._end_file()
            self._begin_file()
        assert self._out is not None
        if self._file_features:
            self._out.write(",\n")
            self._file_chars += 2
        self._file_chars += n_chars
        self._file_features += 1
        self.n_features += 1
        return self._out

    def add(self, geometries: np.ndarray, class_indices: np.ndarray, weight: np.ndarray,
            area_um2: np.ndarray, mean_probability: np.ndarray | None, first_pixel: np.ndarray,
            tile: tuple[int, int] = (0, 0), tile_bounds: tuple[float, float, float, float] | None = None,
            measurements: dict[str, np.ndarray] | None = None) -> None:
        """Add regions: geometries (in the output frame), class indices, weights of their mean
        probabilities (pixels measured), areas, mean probabilities (0..1, or None), first pixels ``(n, 2)``
        ``(y, x)`` at the traced level and the split tile ``(y, x)`` they come from, with its rectangle
        ``(x0, y0, x1, y1)`` in the output frame (recorded in the features' ``metadata``). Class features
        of a tile are written when regions of another tile arrive, or on close. ``measurements`` (name ->
        ``(n,)``, one feature per region only): further measurements of each feature."""
        if self._tile is not None and tile != self._tile and not self.split_regions:
            self._flush_tile()
        self._tile, self._tile_bounds = tile, tile_bounds
        geometries = _single_polygons_unwrapped(geometries)
        texts = shapely.to_geojson(geometries).tolist()
        n_parts = shapely.get_num_geometries(geometries)
        for i, geojson_text in enumerate(texts):
            text = _integral(geojson_text)
            index = int(class_indices[i])
            if self.split_regions:
                cls = self.classes.classes[index]
                fy, fx = int(first_pixel[i, 0]), int(first_pixel[i, 1])
                props = properties(cls.name, cls.color, self.object_type, float(area_um2[i]),
                                   None if mean_probability is None else float(mean_probability[i]),
                                   self._classification(index),
                                   {k: float(v[i]) for k, v in (measurements or {}).items()})
                fid = feature_id(self.identity, cls.name, self.level, f"{fy},{fx}")
                feature = (f'{{"type":"Feature","id":"{fid}","geometry":{text},'
                           f'"properties":{json.dumps(props)}}}')
                self._start_feature(len(feature)).write(feature)
                continue
            acc = self._per_class.setdefault(index, _ClassAccumulator())
            if acc.n_parts and acc.n_parts + int(n_parts[i]) > self.max_parts:
                self._flush_class(index, acc)
            if acc.handle is None:
                assert self._spool is not None
                spool_file = Path(self._spool.name) / f"{index}.part"
                acc.handle = open(spool_file, "w+", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
            items = _coordinates_json(text)
            if acc.n_parts:
                items = "," + items
            acc.handle.write(items)
            acc.n_chars += len(items)
            acc.n_parts += int(n_parts[i])
            acc.weight += float(weight[i])
            acc.area_um2 += float(area_um2[i])
            if mean_probability is not None:
                acc.probability_sum += float(mean_probability[i]) * float(weight[i])

    def _flush_tile(self) -> None:
        """Write the class features of the current tile and empty the spools for the next one."""
        for index in sorted(self._per_class):
            self._flush_class(index, self._per_class[index])
            self._per_class[index].chunk = 1

    def _flush_class(self, index: int, acc: _ClassAccumulator) -> None:
        """Write the polygons spooled for class ``index`` as one feature and empty its spool."""
        if acc.handle is None or acc.n_parts == 0:
            return
        cls = self.classes.classes[index]
        mean = acc.probability_sum / acc.weight if self.has_probabilities and acc.weight else None
        props = properties(cls.name, cls.color, self.object_type, acc.area_um2, mean,
                           self._classification(index))
        metadata = {}
        if self.tiled and self._tile_bounds is not None:
            metadata["wsiseg.tile"] = ",".join(f"{v:g}" for v in self._tile_bounds)
        if acc.chunk > 1:
            metadata["wsiseg.part"] = str(acc.chunk)
        if metadata:
            props["metadata"] = metadata
        region = "all" if not self.tiled or self._tile is None else f"tile{self._tile[0]},{self._tile[1]}"
        if acc.chunk > 1:
            region += f"|part{acc.chunk}"
        fid = feature_id(self.identity, cls.name, self.level, region)
        acc.handle.seek(0)
        if self.check_assembled:
            self._check_assembled(acc)
        kind, open_, close = (("MultiPolygon", "[", "]") if acc.n_parts > 1 else ("Polygon", "", ""))
        head = (f'{{"type":"Feature","id":"{fid}","properties":{json.dumps(props)},'
                f'"geometry":{{"type":"{kind}","coordinates":{open_}')
        out = self._start_feature(len(head) + acc.n_chars + len(close) + 2)
        out.write(head)
        shutil.copyfileobj(acc.handle, out, length=1 << 20)
        out.write(close + "}}")
        acc.handle.seek(0)
        acc.handle.truncate()
        acc.n_parts, acc.n_chars, acc.weight, acc.probability_sum, acc.area_um2 = 0, 0, 0.0, 0.0, 0.0
        acc.chunk += 1

    def _classification(self, index: int) -> str | None:
        return None if self.qupath_names is None else self.qupath_names[index]

    def _check_assembled(self, acc: _ClassAccumulator) -> None:
        """Parse the spooled polygons as the feature's whole geometry; where it is not valid (parts that
        overlap or share an edge, which the vectoriser never produces), replace it by its repair."""
        assert acc.handle is not None
        coordinates = json.loads(f"[{acc.handle.read()}]")
        acc.handle.seek(0)
        geometry = shape({"type": "MultiPolygon", "coordinates": coordinates})
        if geometry.is_valid:
            return
        self.n_repaired += 1
        repaired = _single_polygons_unwrapped(np.array([_polygonal_parts(shapely.make_valid(geometry))]))
        items = _coordinates_json(_integral(shapely.to_geojson(repaired[0])))
        acc.handle.truncate()
        acc.handle.write(items)
        acc.handle.seek(0)
        acc.n_chars, acc.n_parts = len(items), int(shapely.get_num_geometries(repaired[0]))


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _single_polygons_unwrapped(geometries: np.ndarray) -> np.ndarray:
    """MultiPolygons of exactly one polygon replaced by that polygon (QuPath 0.5 cannot import them)."""
    single = (shapely.get_type_id(geometries) == shapely.GeometryType.MULTIPOLYGON) & (
        shapely.get_num_geometries(geometries) == 1)
    if single.any():
        geometries = geometries.copy()
        geometries[single] = shapely.get_geometry(geometries[single], 0)
    return geometries


def _polygonal_parts(geometry: shapely.Geometry) -> shapely.MultiPolygon:
    """The polygons of any geometry (lines and points of a repair dropped), as one MultiPolygon."""
    polygons = [p for p in shapely.get_parts(shapely.get_parts(geometry))
                if isinstance(p, shapely.Polygon) and not p.is_empty]
    return shapely.MultiPolygon(polygons)
