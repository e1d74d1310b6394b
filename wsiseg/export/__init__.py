"""Segmentation -> QuPath GeoJSON (exact, valid, streamed). (GeoJSON in: :mod:`wsiseg.io.geojson_read`.)

No torch here. Public API:

- :func:`export_geojson` / :class:`ExportResult` / :class:`ObjectType`: label pyramid of a wsiseg
  OME-Zarr -> GeoJSON FeatureCollection in slide level-0 pixels of a :class:`CoordinateFrame` (QuPath's
  by default), clipped to the slide (``wsiseg export``, ``segment --geojson``).
  With ``objects=True`` every connected region of the chosen classes is one object with measurements
  (:mod:`wsiseg.export.objects`: :data:`OBJECT_MEASUREMENTS`), and an object table is written beside the
  file (:func:`object_table_path`).
- :func:`vectorise_labels`: the block-wise vectoriser on any ``(H, W)`` label array.
"""

from wsiseg.errors import GeoJSONError
from wsiseg.export._source import LabelSource, label_image_classes, open_label_source
from wsiseg.export.exporter import ExportResult, export_geojson, export_label_source, qc_geojson_path
from wsiseg.export.objects import MEASUREMENTS as OBJECT_MEASUREMENTS
from wsiseg.export.objects import table_path as object_table_path
from wsiseg.export.vectorize import DEFAULT_BLOCK_SIZE, DEFAULT_SPLIT_SIZE, RegionBatch, vectorise_labels
from wsiseg.frames import CoordinateFrame, SlideBounds, SlideFrame
from wsiseg.io.geojson_write import DEFAULT_MAX_BYTES, DEFAULT_MAX_PARTS, ObjectType

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PARTS",
    "DEFAULT_SPLIT_SIZE",
    "OBJECT_MEASUREMENTS",
    "CoordinateFrame",
    "ExportResult",
    "GeoJSONError",
    "LabelSource",
    "ObjectType",
    "RegionBatch",
    "SlideBounds",
    "SlideFrame",
    "export_geojson",
    "export_label_source",
    "label_image_classes",
    "object_table_path",
    "open_label_source",
    "qc_geojson_path",
    "vectorise_labels",
]
