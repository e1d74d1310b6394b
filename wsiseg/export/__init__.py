"""Segmentation -> QuPath GeoJSON (exact, valid, streamed) and GeoJSON regions -> masks/label maps.

No torch here. Public API:

- :func:`export_geojson` / :class:`ExportResult` / :class:`ObjectType`: label pyramid of a wsiseg
  OME-Zarr -> GeoJSON FeatureCollection in slide level-0 pixels (``wsiseg export``, ``segment --geojson``).
- :func:`geojson_to_mask`, :func:`geojson_to_labels`, :func:`read_geojson_regions`: GeoJSON (e.g. QuPath
  annotations) -> bool ROI mask or class-index label map (``segment --mask``, ``evaluate``).
- :func:`vectorise_labels`: the block-wise vectoriser on any ``(H, W)`` label array.
"""

from wsiseg.errors import GeoJSONError
from wsiseg.export._source import LabelSource, open_label_source
from wsiseg.export.exporter import ExportResult, export_geojson, export_label_source
from wsiseg.export.geojson_in import (
    GeoJSONRegion,
    geojson_to_labels,
    geojson_to_mask,
    read_geojson_regions,
)
from wsiseg.export.geojson_out import ObjectType
from wsiseg.export.vectorize import DEFAULT_BLOCK_SIZE, RegionBatch, vectorise_labels

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "ExportResult",
    "GeoJSONError",
    "GeoJSONRegion",
    "LabelSource",
    "ObjectType",
    "RegionBatch",
    "export_geojson",
    "export_label_source",
    "geojson_to_labels",
    "geojson_to_mask",
    "open_label_source",
    "read_geojson_regions",
    "vectorise_labels",
]
