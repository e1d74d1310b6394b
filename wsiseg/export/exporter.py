"""``export_geojson``: a segmentation's label pyramid -> QuPath GeoJSON, streamed block by block."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely

from wsiseg.errors import ConfigError, OutputError
from wsiseg.export._source import LabelSource, open_label_source
from wsiseg.export.vectorize import DEFAULT_BLOCK_SIZE, RegionBatch, vectorise_labels
from wsiseg.io.geojson_write import COORDINATE_DECIMALS, GeoJSONWriter, ObjectType


@dataclass
class ExportResult:
    """What :func:`export_geojson` wrote.

    ``n_regions``: connected regions (polygons) written; ``n_features``: GeoJSON features (one per class,
    or one per region with ``split_regions``); ``n_vertices``: coordinates written; ``n_bytes``: file
    size; ``level``/``mpp``: the pyramid level traced and its um/px; ``n_repaired``: geometries that
    failed shapely's ``is_valid`` and went through ``make_valid`` (expected 0).
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


def _polygonal(geometry: shapely.Geometry) -> shapely.Geometry:
    """The polygonal part of a repaired geometry (make_valid may add lines/points from collapsed parts)."""
    parts = [p for p in shapely.get_parts(geometry) if isinstance(p, (shapely.Polygon, shapely.MultiPolygon))]
    polygons = [q for p in parts for q in (p.geoms if isinstance(p, shapely.MultiPolygon) else [p])]
    return polygons[0] if len(polygons) == 1 else shapely.MultiPolygon(polygons)


def _to_level0(batch: RegionBatch, source: LabelSource, check_all: bool) -> tuple[np.ndarray, int]:
    """Scale level pixels to slide level-0 pixels (rounded); check validity of simplified geometries (all
    with ``check_all``) and repair the invalid ones."""
    scale = np.array([source.downsample_x, source.downsample_y])
    geometries = shapely.transform(batch.geometries, lambda c: np.round(c * scale, COORDINATE_DECIMALS))
    check = np.arange(len(geometries)) if check_all else np.flatnonzero(batch.from_shapely)
    repaired = 0
    if len(check):
        invalid = check[~shapely.is_valid(geometries[check])]
        for i in invalid:
            geometries[i] = _polygonal(shapely.make_valid(geometries[i]))
            repaired += 1
    return np.asarray(geometries), repaired


def _selected_values(source: LabelSource, classes: Sequence[str] | None) -> list[int]:
    if classes is None or len(classes) == 0:
        return [i + 1 for i in range(len(source.classes))]
    return sorted({source.classes.index(name) + 1 for name in classes})


def export_geojson(zarr_path: str | Path, out_path: str | Path, *, level: int | None = None,
                   mpp: float | None = None, simplify_um: float = 0.0, min_area_um2: float = 0.0,
                   classes: Sequence[str] | None = None,
                   object_type: ObjectType | str = ObjectType.ANNOTATION, split_regions: bool = False,
                   block_size: int = DEFAULT_BLOCK_SIZE, check_validity: bool = False) -> ExportResult:
    """Export the class regions of a wsiseg OME-Zarr segmentation as QuPath GeoJSON.

    ``level`` (pyramid level) or ``mpp`` (um/px; the finest level at least that coarse) choose the
    resolution traced; default level 0. Polygons follow the label pixels' edges exactly, with holes as
    interior rings, and are written in slide level-0 pixel coordinates. ``simplify_um``: coverage
    simplification tolerance in micrometres (0 = exact; neighbouring classes keep shared edges).
    ``min_area_um2``: drop regions smaller than this many square micrometres. ``classes``: class names to
    export (default all). ``object_type``: QuPath annotation or detection. ``split_regions``: one feature
    per connected region instead of one MultiPolygon per class. ``block_size``: block side in pixels of
    the level (memory ~ ``block_size**2 * (classes + 13)`` bytes). A ``.gz`` suffix gzip-compresses.
    ``check_validity``: run shapely's ``is_valid`` on every written geometry, not only on simplified ones
    (exact pixel-edge polygons are valid by construction; this costs ~30% more time and proves it:
    ``ExportResult.n_repaired`` counts the geometries that needed ``make_valid``).
    """
    start = time.perf_counter()
    _check_options(Path(out_path), simplify_um, min_area_um2, block_size)
    source = open_label_source(zarr_path, level=level, mpp=mpp)
    return export_label_source(source, out_path, simplify_um=simplify_um, min_area_um2=min_area_um2,
                               classes=classes, object_type=object_type, split_regions=split_regions,
                               block_size=block_size, check_validity=check_validity, _start=start)


def _check_options(out: Path, simplify_um: float, min_area_um2: float, block_size: int) -> None:
    if not (math.isfinite(simplify_um) and simplify_um >= 0):
        raise ConfigError(f"--simplify must be a non-negative number of micrometres, got {simplify_um}")
    if not (math.isfinite(min_area_um2) and min_area_um2 >= 0):
        raise ConfigError(f"--min-area must be a non-negative number of square micrometres, "
                          f"got {min_area_um2}")
    if block_size < 16:
        raise ConfigError(f"block size must be at least 16 pixels, got {block_size}")
    if not out.parent.is_dir():
        raise OutputError(f"output folder does not exist: {out.parent}")


def export_label_source(source: LabelSource, out_path: str | Path, *, simplify_um: float = 0.0,
                        min_area_um2: float = 0.0, classes: Sequence[str] | None = None,
                        object_type: ObjectType | str = ObjectType.ANNOTATION, split_regions: bool = False,
                        block_size: int = DEFAULT_BLOCK_SIZE, check_validity: bool = False,
                        _start: float | None = None) -> ExportResult:
    """:func:`export_geojson` for an already opened :class:`LabelSource` (e.g. arrays in memory)."""
    start = time.perf_counter() if _start is None else _start
    out = Path(out_path)
    _check_options(out, simplify_um, min_area_um2, block_size)
    try:
        kind = ObjectType(object_type)
    except ValueError:
        raise ConfigError(f"object type must be 'annotation' or 'detection', got {object_type!r}") from None
    values = _selected_values(source, classes)
    pixel_area_um2 = source.mpp_x * source.mpp_y
    simplify_px = simplify_um / math.sqrt(pixel_area_um2)
    n_regions = n_vertices = n_repaired = 0
    per_class = np.zeros(len(source.classes), dtype=np.int64)

    writer = GeoJSONWriter(out, source.classes, source.slide_id, source.level, kind, split_regions,
                           has_probabilities=source.probabilities is not None)
    with writer:
        for batch in vectorise_labels(source.labels, probabilities=source.probabilities, values=values,
                                      block_size=block_size, simplify_px=simplify_px):
            area_um2 = batch.pixel_count * pixel_area_um2
            keep = area_um2 >= min_area_um2
            if not keep.any():
                continue
            kept = RegionBatch(batch.geometries[keep], batch.values[keep], batch.pixel_count[keep],
                               None if batch.probability_sum is None else batch.probability_sum[keep],
                               batch.first_pixel[keep], batch.from_shapely[keep])
            geometries, repaired = _to_level0(kept, source, check_validity)
            mean = None if kept.probability_sum is None else kept.probability_sum / kept.pixel_count / 255.0
            writer.add(geometries, kept.values - 1, kept.pixel_count, area_um2[keep], mean, kept.first_pixel)
            n_regions += len(kept)
            n_vertices += int(shapely.get_num_coordinates(geometries).sum())
            n_repaired += repaired
            np.add.at(per_class, kept.values - 1, 1)

    return ExportResult(
        path=out, n_features=writer.n_features, n_regions=n_regions, n_vertices=n_vertices,
        n_bytes=out.stat().st_size, level=source.level, mpp=source.mpp_x,
        seconds=time.perf_counter() - start, n_repaired=n_repaired,
        regions_per_class={source.classes.names[v - 1]: int(per_class[v - 1]) for v in values},
    )
