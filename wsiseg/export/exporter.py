"""``export_geojson``: a segmentation's label pyramid -> QuPath GeoJSON, streamed block by block."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from wsiseg.errors import ConfigError, OutputError, option
from wsiseg.export._source import LabelSource, open_label_source
from wsiseg.export.objects import ObjectTable, measure_objects, object_ids, table_path
from wsiseg.export.vectorize import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_SPLIT_SIZE,
    RegionBatch,
    coverage_fractions,
    vectorise_labels,
)
from wsiseg.frames import CoordinateFrame, SlideFrame
from wsiseg.io.geojson_write import (
    COORDINATE_DECIMALS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PARTS,
    GeoJSONWriter,
    ObjectType,
    split_geojson_name,
)


@dataclass
class ExportResult:
    """What :func:`export_geojson` wrote.

    ``n_regions``: polygons written (connected regions, or their pieces); ``n_features``: GeoJSON
    features (one per class and split tile, or one per region with ``split_regions``); ``n_vertices``:
    coordinates written; ``n_bytes``: file size; ``level``/``mpp``: the pyramid level traced and its
    um/px; ``n_repaired``: geometries that failed shapely's ``is_valid`` and went through ``make_valid``
    (expected 0). ``frame``: the coordinate frame written, ``origin``: OpenSlide level-0 position of its
    ``(0, 0)`` (the slide's bounds corner in the QuPath frame, else ``(0, 0)``), ``extent``: the
    rectangle geometries were clipped to, in that frame (None: unknown slide size, not clipped);
    ``n_clipped``: regions cut by it; ``split_size``/``n_split``: the split tile side (pixels of the
    level, 0 = none) and the pieces written of regions that cross a split-tile border. ``paths``: every
    file written, ``path`` first (more than one when the export passed ``max_bytes``). ``table``: the
    object table of an objects export (:mod:`wsiseg.export.objects`), else None.
    """

    path: Path
    n_features: int
    n_regions: int
    n_vertices: int
    n_bytes: int
    level: int
    mpp: float
    seconds: float
    n_repaired: int
    regions_per_class: dict[str, int] = field(default_factory=dict)
    frame: CoordinateFrame = CoordinateFrame.QUPATH
    origin: tuple[int, int] = (0, 0)
    extent: tuple[float, float, float, float] | None = None
    n_clipped: int = 0
    split_size: int = 0
    n_split: int = 0
    paths: list[Path] = field(default_factory=list)
    table: Path | None = None


def _polygonal(geometry: shapely.Geometry) -> shapely.Geometry:
    """The polygonal part of a repaired or clipped geometry (make_valid and overlays may add lines or
    points from collapsed parts); an empty MultiPolygon when nothing polygonal is left."""
    parts = [p for p in shapely.get_parts(geometry) if isinstance(p, (shapely.Polygon, shapely.MultiPolygon))]
    polygons = [q for p in parts for q in (p.geoms if isinstance(p, shapely.MultiPolygon) else [p])
                if not q.is_empty]
    return polygons[0] if len(polygons) == 1 else shapely.MultiPolygon(polygons)


def _to_frame(batch: RegionBatch, source: LabelSource, frame: SlideFrame,
              check_all: bool) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Scale level pixels to slide level-0 pixels of ``frame`` (rounded to 0.01 px), clip to the frame's
    extent, check validity of simplified geometries (all with ``check_all``) and repair the invalid ones.
    Returns (geometries, non-empty mask, repaired, clipped).

    Clipping: pixels wholly outside the extent were not traced (:func:`_coverage`), so a pixel-edge
    polygon reaches at most into the pixels the extent's border cuts, and clamping its coordinates to
    the extent is its exact intersection with it: the clamp is strictly increasing on the coordinates
    present (every kept pixel keeps a positive width), so the polygon stays valid, and it costs one pass
    over the coordinates where a GEOS overlay of a slide-wide region with thousands of holes costs
    minutes. Simplified polygons (slanted edges) are intersected with the extent by GEOS, snapped to the
    0.01 px grid and checked."""
    scale = np.array([source.downsample_x, source.downsample_y])
    shift = np.array(frame.origin, dtype=np.float64)
    geometries = np.asarray(shapely.transform(
        batch.geometries, lambda c: np.round(c * scale - shift, COORDINATE_DECIMALS)))
    check = np.ones(len(geometries), dtype=bool) if check_all else batch.from_shapely.copy()
    n_clipped = 0
    if frame.extent is not None and len(geometries):
        x0, y0, x1, y1 = frame.extent
        bounds = shapely.bounds(geometries)
        outside = (bounds[:, 0] < x0) | (bounds[:, 1] < y0) | (bounds[:, 2] > x1) | (bounds[:, 3] > y1)
        exact = outside & ~batch.from_shapely
        if exact.any():
            low, high = np.array([x0, y0]), np.array([x1, y1])
            geometries[exact] = shapely.transform(geometries[exact], lambda c: np.clip(c, low, high))
        slanted = outside & batch.from_shapely
        if slanted.any():
            cut = shapely.intersection(geometries[slanted], shapely.box(x0, y0, x1, y1))
            cut = shapely.set_precision(cut, 10.0**-COORDINATE_DECIMALS)
            geometries[slanted] = [_polygonal(g) for g in cut]
        n_clipped = int(outside.sum())
    repaired = 0
    indices = np.flatnonzero(check)
    if len(indices):
        for i in indices[~shapely.is_valid(geometries[indices])]:
            geometries[i] = _polygonal(shapely.make_valid(geometries[i]))
            repaired += 1
    return geometries, ~shapely.is_empty(geometries), repaired, n_clipped


def _coverage(frame: SlideFrame, source: LabelSource) -> tuple[np.ndarray, np.ndarray] | None:
    """Per column and per row of the traced level: the fraction inside the frame's extent, measured
    between pixel edges placed exactly as :func:`_to_frame` writes them (scaled, shifted, rounded), so a
    pixel counted as partly inside keeps at least 0.01 px after clamping. None when all are inside."""
    if frame.extent is None:
        return None
    x0, y0, x1, y1 = frame.extent
    fractions = []
    for n, downsample, shift, low, high in ((source.width, source.downsample_x, frame.origin[0], x0, x1),
                                            (source.height, source.downsample_y, frame.origin[1], y0, y1)):
        edges = np.round(np.arange(n + 1, dtype=np.float64) * downsample - float(shift), COORDINATE_DECIMALS)
        fractions.append(coverage_fractions(edges, low, high))
    if all(bool((f == 1).all()) for f in fractions):
        return None
    return fractions[0], fractions[1]


def _selected_values(source: LabelSource, classes: Sequence[str] | None) -> list[int]:
    if classes is None or len(classes) == 0:
        if source.label_image == "qc":  # the artifacts, for review
            from wsiseg.qc.labels import ARTIFACTS

            return sorted(int(a) for a in ARTIFACTS if int(a) <= len(source.classes))
        return [i + 1 for i in range(len(source.classes))]
    return sorted({source.classes.index(name) + 1 for name in classes})


def export_geojson(zarr_path: str | Path, out_path: str | Path, *, level: int | None = None,
                   mpp: float | None = None, simplify_um: float = 0.0, min_area_um2: float = 0.0,
                   classes: Sequence[str] | None = None,
                   object_type: ObjectType | str = ObjectType.ANNOTATION, split_regions: bool = False,
                   block_size: int = DEFAULT_BLOCK_SIZE, check_validity: bool = False,
                   frame: CoordinateFrame | str = CoordinateFrame.QUPATH,
                   split_size: int = DEFAULT_SPLIT_SIZE, max_parts: int = DEFAULT_MAX_PARTS,
                   max_bytes: int = DEFAULT_MAX_BYTES, labels: str = "classes",
                   objects: bool = False) -> ExportResult:
    """Export the class regions of a wsiseg OME-Zarr segmentation as QuPath GeoJSON.

    ``level`` (pyramid level) or ``mpp`` (um/px; the finest level at least that coarse) choose the
    resolution traced; default level 0. Polygons follow the label pixels' edges exactly, with holes as
    interior rings, and are written in slide level-0 pixel coordinates of ``frame``: QuPath's (default;
    OpenSlide level 0 minus the corner of the slide's ``openslide.bounds`` rectangle, which QuPath crops
    to) or OpenSlide's (uncropped). Every geometry is clipped to the slide (to the bounds rectangle when
    the slide has one); areas and mean probabilities are those of the clipped region.
    ``simplify_um``: coverage simplification tolerance in micrometres (0 = exact; neighbouring classes
    keep shared edges). ``min_area_um2``: drop regions smaller than this many square micrometres (pieces
    of regions cut at split-tile borders are kept). ``classes``: class names to export (default all).
    ``object_type``: QuPath annotation or detection. ``split_regions``: one feature per connected region
    instead of one MultiPolygon per class and split tile. ``split_size``: side in pixels of the level of
    the split tiles traced independently (0 = none): a region larger than a tile is written as one piece
    per tile, cut along tile borders, which bounds memory and the size of one feature; a slide within
    one tile gives one feature per class. ``block_size``: block side in pixels of the level (memory ~
    ``block_size**2 * (classes + 13)`` bytes). A ``.gz`` suffix gzip-compresses. ``check_validity``: run
    shapely's ``is_valid`` on every written geometry, not only on simplified and clipped ones (exact
    pixel-edge polygons are valid by construction; this costs ~30% more time and proves it:
    ``ExportResult.n_repaired`` counts the geometries that needed ``make_valid``); it also parses every
    class feature back and checks its whole geometry, not only its parts.

    What QuPath imports (:class:`wsiseg.io.geojson_write.GeoJSONWriter`): one polygon is written as a
    ``Polygon``, two or more as a ``MultiPolygon``; ``max_parts``: polygons per class feature at most (a
    class with more regions in one split tile gets several features); ``max_bytes``: uncompressed bytes
    per file at most (0 = no limit): larger exports continue in ``<name>-002.geojson``, ... (listed in
    ``ExportResult.paths``).

    ``labels``: the label image to export: ``classes`` (the segmentation) or ``qc`` (its QC: by default
    the artifacts, as QuPath annotations classified ``Artifact: pen``, ``Artifact: blur``, ... for review;
    ``segment --mask`` takes the reviewed file back).

    ``objects``: every connected region of ``classes`` becomes one object (a feature of its own, traced
    whole: no split tiles) with the measurements of :mod:`wsiseg.export.objects`, and the object table
    is written beside the file (``<name>.objects.csv``, :func:`wsiseg.export.objects.table_path`).
    ``min_area_um2`` then drops every smaller object.
    """
    start = time.perf_counter()
    _check_options(Path(out_path), simplify_um, min_area_um2, block_size, split_size, max_parts, max_bytes)
    source = open_label_source(zarr_path, level=level, mpp=mpp, labels=labels)
    return export_label_source(source, out_path, simplify_um=simplify_um, min_area_um2=min_area_um2,
                               classes=classes, object_type=object_type, split_regions=split_regions,
                               block_size=block_size, check_validity=check_validity, frame=frame,
                               split_size=split_size, max_parts=max_parts, max_bytes=max_bytes,
                               objects=objects, _start=start)


def _check_options(out: Path, simplify_um: float, min_area_um2: float, block_size: int,
                   split_size: int, max_parts: int, max_bytes: int) -> None:
    if not (math.isfinite(simplify_um) and simplify_um >= 0):
        raise ConfigError(f"{option('simplify_um')} must be a non-negative number of micrometres, "
                          f"got {simplify_um}")
    if not (math.isfinite(min_area_um2) and min_area_um2 >= 0):
        raise ConfigError(f"{option('min_area_um2')} must be a non-negative number of square micrometres, "
                          f"got {min_area_um2}")
    if block_size < 16:
        raise ConfigError(f"block size must be at least 16 pixels, got {block_size}")
    if split_size != 0 and split_size < 16:
        raise ConfigError(f"split size must be 0 (no split) or at least 16 pixels, got {split_size}")
    if max_parts < 1:
        raise ConfigError(f"polygons per feature must be at least 1, got {max_parts}")
    if max_bytes < 0:
        raise ConfigError(f"file size limit must be 0 (no limit) or positive, got {max_bytes} bytes")
    if not out.parent.is_dir():
        raise OutputError(f"output folder does not exist: {out.parent}")


def _frame(value: CoordinateFrame | str) -> CoordinateFrame:
    try:
        return CoordinateFrame(value)
    except ValueError:
        choices = ", ".join(repr(f.value) for f in CoordinateFrame)
        raise ConfigError(f"coordinate frame must be one of {choices}, got {value!r}") from None


def export_label_source(source: LabelSource, out_path: str | Path, *, simplify_um: float = 0.0,
                        min_area_um2: float = 0.0, classes: Sequence[str] | None = None,
                        object_type: ObjectType | str = ObjectType.ANNOTATION, split_regions: bool = False,
                        block_size: int = DEFAULT_BLOCK_SIZE, check_validity: bool = False,
                        frame: CoordinateFrame | str = CoordinateFrame.QUPATH,
                        split_size: int = DEFAULT_SPLIT_SIZE, max_parts: int = DEFAULT_MAX_PARTS,
                        max_bytes: int = DEFAULT_MAX_BYTES, objects: bool = False,
                        _start: float | None = None) -> ExportResult:
    """:func:`export_geojson` for an already opened :class:`LabelSource` (e.g. arrays in memory)."""
    start = time.perf_counter() if _start is None else _start
    out = Path(out_path)
    if objects:  # one feature per region, each traced whole
        split_regions, split_size = True, 0
    _check_options(out, simplify_um, min_area_um2, block_size, split_size, max_parts, max_bytes)
    try:
        kind = ObjectType(object_type)
    except ValueError:
        raise ConfigError(f"object type must be 'annotation' or 'detection', got {object_type!r}") from None
    slide_frame = SlideFrame.of(_frame(frame), width0=source.width0, height0=source.height0,
                                bounds=source.bounds)
    values = _selected_values(source, classes)
    pixel_area_um2 = source.mpp_x * source.mpp_y
    simplify_px = simplify_um / math.sqrt(pixel_area_um2)
    tiled = 0 < split_size < max(source.height, source.width)
    n_regions = n_vertices = n_repaired = n_clipped = n_split = 0
    per_class = np.zeros(len(source.classes), dtype=np.int64)
    header: dict[str, Any] = {**slide_frame.as_dict(), "level": source.level, "mpp": source.mpp_x,
                              "split_size": split_size if tiled else 0}
    if source.bounds is not None:
        header["bounds_openslide"] = source.bounds.as_dict()

    writer = GeoJSONWriter(out, source.classes, source.identity, source.level, kind, split_regions,
                           has_probabilities=source.probabilities is not None, tiled=tiled,
                           collection_properties={"wsiseg": header}, max_parts=max_parts,
                           max_bytes=max_bytes, check_assembled=check_validity,
                           qupath_names=source.qupath_names)
    table = ObjectTable(table_path(out), source.probabilities is not None) if objects else None
    with writer, table or contextlib.nullcontext():
        for batch in vectorise_labels(source.labels, probabilities=source.probabilities, values=values,
                                      block_size=block_size, simplify_px=simplify_px,
                                      split_size=split_size if tiled else 0,
                                      coverage=_coverage(slide_frame, source)):
            area_um2 = batch.area * pixel_area_um2
            keep = (batch.area > 0) & ((area_um2 >= min_area_um2) | batch.split)
            if not keep.any():
                continue
            kept = batch.select(keep)
            geometries, written, repaired, clipped = _to_frame(kept, source, slide_frame, check_validity)
            n_repaired += repaired
            n_clipped += clipped
            if not written.all():  # a sliver outside the slide that rounding to 0.01 px removed
                kept, geometries = kept.select(written), geometries[written]
            mean = None if kept.probability_sum is None else kept.probability_sum / kept.area / 255.0
            measures = None if table is None else _measure(table, geometries, kept, mean, source)
            writer.add(geometries, kept.values - 1, kept.area, kept.area * pixel_area_um2, mean,
                       kept.first_pixel, kept.tile, _tile_bounds(kept.tile, split_size, source, slide_frame),
                       measures)
            n_regions += len(kept)
            n_split += int(kept.split.sum())
            n_vertices += int(shapely.get_num_coordinates(geometries).sum())
            np.add.at(per_class, kept.values - 1, 1)

    return ExportResult(
        path=out, n_features=writer.n_features, n_regions=n_regions, n_vertices=n_vertices,
        n_bytes=sum(p.stat().st_size for p in writer.paths), level=source.level, mpp=source.mpp_x,
        seconds=time.perf_counter() - start, n_repaired=n_repaired + writer.n_repaired,
        regions_per_class={source.classes.names[v - 1]: int(per_class[v - 1]) for v in values},
        frame=slide_frame.frame, origin=slide_frame.origin, extent=slide_frame.extent, n_clipped=n_clipped,
        split_size=split_size if tiled else 0, n_split=n_split, paths=list(writer.paths),
        table=None if table is None else table.path,
    )


def _measure(table: ObjectTable, geometries: np.ndarray, kept: RegionBatch, mean: np.ndarray | None,
             source: LabelSource) -> dict[str, np.ndarray]:
    """The objects' measurements (GeoJSON and table), their rows written to ``table``."""
    um0 = (source.mpp_x / source.downsample_x, source.mpp_y / source.downsample_y)
    peak = None if kept.probability_max is None else kept.probability_max / 255.0
    measures = measure_objects(geometries, kept.area * source.mpp_x * source.mpp_y, um0,
                               math.sqrt(source.mpp_x * source.mpp_y), mean, peak)
    names = [source.classes.names[v - 1] for v in kept.values]
    centroids = shapely.get_coordinates(shapely.centroid(geometries))
    table.add(object_ids(source.identity, names, source.level, kept.first_pixel), names, centroids, measures)
    return measures


def qc_geojson_path(path: str | Path) -> Path:
    """Where the QC artifacts of an export to ``path`` go: ``slide.geojson`` -> ``slide.qc.geojson`` (the
    same for ``.json`` and ``.gz`` endings)."""
    path = Path(path)
    stem, ext = split_geojson_name(path)
    return path.with_name(f"{stem}.qc{ext or '.geojson'}")


def _tile_bounds(tile: tuple[int, int], split_size: int, source: LabelSource,
                 frame: SlideFrame) -> tuple[float, float, float, float]:
    """The rectangle ``(x0, y0, x1, y1)`` of split tile ``tile`` (its ``(y, x)`` origin in pixels of the
    level) in the frame's level-0 pixels, within the frame's extent."""
    ty, tx = tile
    side = split_size if split_size > 0 else max(source.width, source.height)
    x1, y1 = min(tx + side, source.width), min(ty + side, source.height)
    rect = [tx * source.downsample_x - frame.origin[0], ty * source.downsample_y - frame.origin[1],
            x1 * source.downsample_x - frame.origin[0], y1 * source.downsample_y - frame.origin[1]]
    if frame.extent is not None:
        low_x, low_y, high_x, high_y = frame.extent
        rect = [min(max(rect[0], low_x), high_x), min(max(rect[1], low_y), high_y),
                min(max(rect[2], low_x), high_x), min(max(rect[3], low_y), high_y)]
    x0, y0, x1f, y1f = (round(v, COORDINATE_DECIMALS) for v in rect)
    return x0, y0, x1f, y1f
