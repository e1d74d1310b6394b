"""Objects: every connected region of chosen classes as one QuPath object with measurements, and a table.

Countable structures (glands, tumour nests, vessels) are exported one feature per 4-connected region,
traced whole (no split tiles: a region that a split-tile border would cut stays one object), with a stable
id (the same UUID in the GeoJSON and the table) and these measurements, all in micrometres of the slide:

- ``Area um^2``: the region's pixels at the traced level (inside the slide) times the pixel area;
- ``Perimeter um``: the length of its outline and of its holes' outlines with the pixel staircase smoothed
  away (Douglas-Peucker at one pixel of the traced level): digitised discs of radius 5-80 px, ellipses
  and rectangles at any angle measure within 4 % of their true perimeter, where the staircase itself
  reads up to 4/pi (+27 %) times it;
- ``Equivalent diameter um``: the diameter of the disc of the same area;
- ``Solidity``: the region's polygon area over its convex hull's area (1 for convex regions);
- ``Circularity``: 4 pi area / perimeter^2 (1 for a disc, lower for elongated or ragged regions);
- ``Mean probability`` / ``Max probability``: of the region's class over its pixels (0..1).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np
import shapely

from wsiseg.io.geojson_write import feature_id, split_geojson_name

AREA = "Area um^2"
PERIMETER = "Perimeter um"
DIAMETER = "Equivalent diameter um"
SOLIDITY = "Solidity"
CIRCULARITY = "Circularity"
MEAN_PROBABILITY = "Mean probability"
MAX_PROBABILITY = "Max probability"
#: the measurements every object carries, in this order (the probabilities only with probabilities)
MEASUREMENTS = (AREA, PERIMETER, DIAMETER, SOLIDITY, CIRCULARITY, MEAN_PROBABILITY, MAX_PROBABILITY)
#: the table's columns before the measurements (centroid in level-0 pixels of the GeoJSON's frame)
TABLE_KEYS = ("object_id", "class", "centroid_x_px", "centroid_y_px")


def measure_objects(geometries: np.ndarray, area_um2: np.ndarray, um_per_px: tuple[float, float],
                    traced_um: float, mean_probability: np.ndarray | None,
                    max_probability: np.ndarray | None) -> dict[str, np.ndarray]:
    """The measurements (module docstring) of regions whose ``geometries`` are in level-0 pixels
    (``um_per_px``: level-0 um/px along x and y), ``area_um2`` their pixel areas, ``traced_um`` the um/px
    of the level they were traced at; probabilities 0..1 or None. Returns name -> float64 ``(n,)``."""
    scale = np.array(um_per_px, dtype=np.float64)
    in_um = np.asarray(shapely.transform(geometries, lambda c: c * scale))
    polygon_area = shapely.area(in_um)
    # collinear vertices dropped and rings started canonically first, so that the smoothing (and the
    # perimeter) does not depend on where block borders put vertices
    canonical = shapely.normalize(shapely.simplify(in_um, 0.0, preserve_topology=True))
    perimeter = shapely.length(shapely.simplify(canonical, traced_um, preserve_topology=True))
    hull_area = shapely.area(shapely.convex_hull(in_um))
    area = np.asarray(area_um2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            AREA: area,
            PERIMETER: perimeter,
            DIAMETER: 2.0 * np.sqrt(area / math.pi),
            SOLIDITY: np.where(hull_area > 0, polygon_area / hull_area, 0.0),
            CIRCULARITY: np.where(perimeter > 0, 4.0 * math.pi * polygon_area / perimeter ** 2, 0.0),
        }
    if mean_probability is not None and max_probability is not None:
        out[MEAN_PROBABILITY] = np.asarray(mean_probability, dtype=np.float64)
        out[MAX_PROBABILITY] = np.asarray(max_probability, dtype=np.float64)
    return out


def object_ids(identity: str, class_names: list[str], level: int, first_pixel: np.ndarray) -> list[str]:
    """The objects' stable ids, as the GeoJSON writer gives their features (first pixel at the level)."""
    return [feature_id(identity, name, level, f"{int(fy)},{int(fx)}")
            for name, (fy, fx) in zip(class_names, first_pixel, strict=True)]


def table_path(geojson_path: str | os.PathLike[str]) -> Path:
    """The object table beside an objects GeoJSON: ``glands.geojson`` -> ``glands.objects.csv``
    (``slide.objects.geojson`` -> ``slide.objects.csv``)."""
    path = Path(geojson_path)
    stem, _ = split_geojson_name(path)
    return path.with_name(f"{stem.removesuffix('.objects')}.objects.csv")


def objects_geojson_path(geojson_path: str | os.PathLike[str]) -> Path:
    """Where ``segment --geojson FILE --objects`` puts the objects: ``slide.geojson`` ->
    ``slide.objects.geojson`` (the class regions stay in ``slide.geojson``)."""
    path = Path(geojson_path)
    stem, ext = split_geojson_name(path)
    return path.with_name(f"{stem}.objects{ext or '.geojson'}")


def count_objects(table: str | os.PathLike[str]) -> dict[str, int]:
    """Objects per class in an object table."""
    counts: dict[str, int] = {}
    with open(table, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            counts[row["class"]] = counts.get(row["class"], 0) + 1
    return counts


class ObjectTable:
    """Streams the object table (CSV: :data:`TABLE_KEYS`, then the measurements) to ``path``, written under
    a temporary name and moved into place on a clean close (a failed export leaves no half table)."""

    def __init__(self, path: Path, with_probabilities: bool) -> None:
        self.path = path
        self.columns = [m for m in MEASUREMENTS
                        if with_probabilities or m not in (MEAN_PROBABILITY, MAX_PROBABILITY)]
        self._partial = path.with_name(path.name + ".partial")
        self._file: IO[str] | None = None
        self.n_rows = 0
        self.per_class: dict[str, int] = {}

    def __enter__(self) -> ObjectTable:
        self._file = open(self._partial, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow([*TABLE_KEYS, *self.columns])
        return self

    def add(self, ids: list[str], class_names: list[str], centroids: np.ndarray,
            measurements: dict[str, np.ndarray]) -> None:
        """Rows for ``ids`` (centroids ``(n, 2)`` x, y in level-0 pixels of the frame)."""
        values = np.stack([measurements[c] for c in self.columns], axis=1) if self.columns else None
        for i, (oid, name) in enumerate(zip(ids, class_names, strict=True)):
            row = [oid, name, f"{centroids[i, 0]:.2f}", f"{centroids[i, 1]:.2f}"]
            row += [f"{v:.6g}" for v in values[i]] if values is not None else []
            self._csv.writerow(row)
            self.per_class[name] = self.per_class.get(name, 0) + 1
        self.n_rows += len(ids)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._file is not None
        self._file.close()
        if exc_type is None:
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)
