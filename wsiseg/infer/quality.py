"""QC inside one segmentation run (:mod:`wsiseg.qc` applied to a run): which tiles the grid keeps, what the
read path measures, what the writer leaves out, and what the output records.

:class:`RunQC` is made once per run (:func:`plan_region`); under ``QCMode.DEFAULT`` the grid keeps tiles of
analysable tissue only, every tile read is measured for focus, and each output chunk has its artifact
pixels (pen on the thumbnail, blurred blocks) written as "not analysed"; under ``REPORT`` nothing is left
out but everything is measured and recorded. After the run the QC label image ``labels/qc`` is written
over the whole output grid and its areas recorded.

A ``--mask`` GeoJSON whose features are classified ``Artifact`` / ``Artifact: <kind>`` (what ``wsiseg qc``
and ``export --labels qc`` write, reviewed and edited in QuPath) is the run's QC: its artifacts are left
out as they are and nothing is detected automatically; its other features, if any, are the region of
interest (else the detected tissue is).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.errors import ConfigError
from wsiseg.frames import SlideFrame, edge_weights
from wsiseg.infer.options import SegmentOptions
from wsiseg.infer.stitch import Layout
from wsiseg.io.omezarr import LabelValue, SegmentationWriter
from wsiseg.qc import ARTIFACTS, FocusGrid, QCAreas, QCLabel, QCMap, QCMode, QCSettings, assess_slide
from wsiseg.qc.assess import tissue_of
from wsiseg.qc.focus import block_size
from wsiseg.qc.labels import label_of_classification
from wsiseg.slide import Slide, TissueMask, tissue_mask_from_image
from wsiseg.slide.grid import Tile, TileGrid
from wsiseg.slide.tissue import detect_tissue, thumbnail_mpp
from wsiseg.tiling import Tiling

#: Longest side (level-0 pixels / downsample) of the raster a GeoJSON ROI is drawn into.
ROI_RASTER_PX = 4096

#: Which label values are artifacts (a lookup table over uint8 labels).
_IS_ARTIFACT = np.zeros(256, bool)
_IS_ARTIFACT[[int(a) for a in ARTIFACTS]] = True


@dataclass
class RunQC:
    """The QC of one run. ``reviewed``: the GeoJSON its artifacts came from (None: detected); ``roi``: the
    user's region of interest (the tile grid keeps its tiles, the QC labels call all of it tissue)."""

    mode: QCMode
    settings: QCSettings
    qc_map: QCMap
    tiling: Tiling
    reviewed: Path | None = None
    roi: TissueMask | None = None
    focus: FocusGrid | None = None

    def grid_mask(self) -> TissueMask:
        """What the tile grid keeps tiles of: the ROI when there is one, else analysable tissue
        (``default``) or all tissue (``report``)."""
        if self.roi is not None:
            return self.roi
        return self.qc_map.analysable_mask() if self.mode is QCMode.DEFAULT else self.qc_map.tissue_mask()

    def attach(self, grid: TileGrid) -> None:
        """Set up the focus grid for ``grid`` (unless blur is off, the artifacts were reviewed, or the tiles
        are enlarged from level 0, which blurs them by construction: :func:`judges_blur`)."""
        if self.settings.blur.enabled and self.reviewed is None and judges_blur(self.tiling.mpp,
                                                                                self.qc_map.slide_mpp):
            t = self.tiling
            block = block_size(t.step, t.mpp, self.settings.blur.block_um, t.output_stride)
            self.focus = FocusGrid(block, t.step, t.tile_size, grid.n_cols, grid.n_rows, self.settings.blur)

    def measure(self, tile: Tile, pixels: np.ndarray) -> None:
        """Measure the focus of a tile just read (reader threads)."""
        if self.focus is not None:
            self.focus.measure(tile.col, tile.row, pixels)

    def labels(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """QC labels uint8 of an output-grid ``box`` (y0, y1, x0, x1)."""
        y0, y1, x0, x1 = box
        labels = self.qc_map.labels_on(y0, y1, x0, x1, self.tiling.output_mpp, focus=self.focus,
                                       analysis_mpp=self.tiling.mpp)
        if self.roi is not None:
            inside = _sample(self.roi.mask, self.roi.mpp, y0, y1, x0, x1, self.tiling.output_mpp)
            labels[~inside] = QCLabel.BACKGROUND
            labels[inside & (labels == QCLabel.BACKGROUND)] = QCLabel.TISSUE
        return labels

    def excluded(self, box: tuple[int, int, int, int]) -> np.ndarray | None:
        """Bool mask of the artifact pixels of an output-grid ``box`` to write as not analysed (``default``
        only), or None when nothing there is left out."""
        if self.mode is not QCMode.DEFAULT:
            return None
        mask = _IS_ARTIFACT[self.labels(box)]
        return mask if mask.any() else None

    def write(self, writer: SegmentationWriter, layout: Layout, extent_um: tuple[float, float]) -> QCAreas:
        """Write ``labels/qc`` over the output grid and return its areas (pixels at the slide's edge count
        only inside the slide)."""
        mpp = self.tiling.output_mpp
        wx = np.array(edge_weights(layout.width_o, mpp, extent_um[0]))
        wy = np.array(edge_weights(layout.height_o, mpp, extent_um[1]))
        areas = QCAreas({})

        def chunks() -> Iterator[tuple[tuple[int, int, int, int], np.ndarray]]:
            nonlocal areas
            for i in range(layout.n_chunk_rows):
                for j in range(layout.n_chunk_cols):
                    box = layout.chunk_box(i, j)
                    labels = self.labels(box)
                    y0, y1, x0, x1 = box
                    areas = areas + QCAreas.count(labels, wy[y0:y1], wx[x0:x1])
                    yield box, labels

        writer.write_label_image("qc", label_values(), chunks())
        return areas

    def record(self, areas: QCAreas) -> dict[str, Any]:
        """What the output's metadata records about QC (``wsiseg.qc``)."""
        blur: dict[str, Any] | None = None
        if self.focus is not None:
            blur = {"block_px": self.focus.block, "block_um": self.focus.block * self.tiling.mpp,
                    "blocks_judged": self.focus.n_measured, "blocks_blurred": self.focus.n_blurred}
        return {"mode": self.mode.value, "reviewed": None if self.reviewed is None else str(self.reviewed),
                "thumbnail_mpp": self.qc_map.mpp, "areas": areas.to_dict(), "blur": blur,
                "labels": {label.title: int(label) for label in QCLabel},
                "excluded": self.mode is QCMode.DEFAULT}


def judges_blur(mpp: float, slide_mpp: tuple[float, float]) -> bool:
    """Can focus be judged on tiles read at ``mpp``? Not when they are enlarged from the slide's level 0
    (finer than it by more than 1 %): enlarged tiles are blurred whatever the focus was."""
    return mpp >= min(slide_mpp) * 0.99


def _sample(mask: np.ndarray, mask_mpp: float, y0: int, y1: int, x0: int, x1: int, mpp: float) -> np.ndarray:
    """``mask`` (bool, ``mask_mpp`` um/px) under the centres of rows ``y0:y1``, columns ``x0:x1`` of a grid of
    ``mpp`` um/px (False beyond the mask)."""
    rows = np.floor((np.arange(y0, y1) + 0.5) * mpp / mask_mpp).astype(np.int64)
    cols = np.floor((np.arange(x0, x1) + 0.5) * mpp / mask_mpp).astype(np.int64)
    out = np.zeros((y1 - y0, x1 - x0), bool)
    inside_r, inside_c = rows < mask.shape[0], cols < mask.shape[1]
    out[np.ix_(inside_r, inside_c)] = mask[rows[inside_r][:, None], cols[inside_c][None, :]]
    return out


def label_values() -> list[LabelValue]:
    """The values of a QC label image, named and coloured (NGFF ``image-label``)."""
    return [LabelValue(int(label), label.title, label.rgba) for label in QCLabel]


def plan_region(slide: Slide, options: SegmentOptions,
                tiling: Tiling) -> tuple[TissueMask | None, RunQC | None]:
    """What a run analyses: the mask the tile grid keeps tiles of (None: every tile) and its QC (None:
    ``--qc off``). See the module docstring for masks and reviewed artifacts."""
    mask = options.mask
    if isinstance(mask, TissueMask):
        return mask, None
    if mask is not None:
        path = Path(mask)
        if not path.is_file():
            raise ConfigError(f"mask file not found: {path}")
        if path.name.lower().endswith((".geojson", ".json", ".geojson.gz")):
            return _geojson_region(slide, options, tiling, path)
        return tissue_mask_from_image(path, slide), None
    if options.qc is QCMode.OFF:
        return (detect_tissue(slide) if options.tissue else None), None
    qc_map, _ = assess_slide(slide, options.qc_settings)
    qc = RunQC(options.qc, options.qc_settings, qc_map, tiling)
    return (qc.grid_mask() if options.tissue else None), qc


def _geojson_region(slide: Slide, options: SegmentOptions, tiling: Tiling,
                    path: Path) -> tuple[TissueMask, RunQC | None]:
    """A GeoJSON ``--mask``: its region of interest, and its reviewed artifacts as the run's QC (or the
    detected artifacts within the region, unless ``--qc off``)."""
    from wsiseg.io.geojson_read import read_geojson_regions, regions_to_mask

    regions = [(r, label_of_classification(r.classification)) for r in read_geojson_regions(path)]
    roi = [r for r, label in regions if label is None]
    reviewed = [(r, label) for r, label in regions if label is not None]
    w0, h0 = slide.dimensions
    origin = SlideFrame.of(options.geojson_frame, width0=w0, height0=h0, bounds=slide.bounds).origin
    if roi:
        mpp = slide.mpp[0] * max(1.0, max(w0, h0) / float(ROI_RASTER_PX))
    else:
        mpp = thumbnail_mpp(slide, options.qc_settings.tissue.mpp)
    downsample = (mpp / slide.mpp[0], mpp / slide.mpp[1])
    width, height = int(np.ceil(w0 / downsample[0])), int(np.ceil(h0 / downsample[1]))
    if roi:
        tissue = regions_to_mask(roi, width, height, downsample, origin=origin)
    else:
        tissue = tissue_of(slide.thumbnail(mpp), mpp, options.qc_settings.tissue)
    height, width = tissue.shape
    region = TissueMask(tissue, mpp, slide.mpp)
    if not reviewed:
        if options.qc is QCMode.OFF:
            return region, None
        qc_map, _ = assess_slide(slide, options.qc_settings)
        return region, RunQC(options.qc, options.qc_settings, qc_map, tiling, roi=region)
    labels = tissue.astype(np.uint8) * np.uint8(QCLabel.TISSUE)
    for label in ARTIFACTS:
        drawn = regions_to_mask([r for r, lab in reviewed if lab is label], width, height, downsample,
                                origin=origin)
        labels[drawn] = label
    mode = QCMode.DEFAULT if options.qc is QCMode.OFF else options.qc
    qc = RunQC(mode, options.qc_settings, QCMap(labels, tissue, mpp, slide.mpp), tiling, reviewed=path)
    return qc.grid_mask(), qc
