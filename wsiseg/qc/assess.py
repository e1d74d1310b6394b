"""A slide's QC: :func:`assess_slide` reads one thumbnail and labels tissue and pen ink on it
(:class:`QCMap`); blur comes from the tiles a run reads (:class:`~wsiseg.qc.focus.FocusGrid`).
:meth:`QCMap.labels_on` puts both onto any pixel grid of the slide (the output grid of a segmentation,
the thumbnail itself), which is what the QC label image, the exclusion of artifacts from the class
probabilities and the QC areas are made of.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsiseg.qc.colour import InkColourModel
from wsiseg.qc.focus import FocusGrid
from wsiseg.qc.ink import detect_ink
from wsiseg.qc.labels import ARTIFACTS, QCLabel
from wsiseg.qc.settings import QCSettings, TissueSettings
from wsiseg.slide import morphology
from wsiseg.slide.reader import Slide
from wsiseg.slide.tissue import TissueMask, thumbnail_mpp, tissue_from_rgb


@dataclass(frozen=True)
class QCMap:
    """Thumbnail-level QC of a slide: ``labels`` uint8 ``(h, w)`` (:class:`QCLabel` values: background,
    tissue, pen) at ``mpp`` um/px from level-0 pixel (0, 0); ``tissue`` the tissue detected (pen over tissue
    included: what would be analysed without QC); ``slide_mpp`` the slide's level-0 ``(mpp_x, mpp_y)``."""

    labels: np.ndarray
    tissue: np.ndarray
    mpp: float
    slide_mpp: tuple[float, float]

    def tissue_mask(self) -> TissueMask:
        """Tissue as detected (artifacts included): what ``--qc report`` and ``off`` analyse."""
        return TissueMask(self.tissue, self.mpp, self.slide_mpp)

    def analysable_mask(self) -> TissueMask:
        """Tissue without the thumbnail's artifacts: what ``--qc default`` keeps tiles for."""
        return TissueMask(self.tissue & (self.labels == QCLabel.TISSUE), self.mpp, self.slide_mpp)

    def labels_on(self, y0: int, y1: int, x0: int, x1: int, mpp: float, *, focus: FocusGrid | None = None,
                  analysis_mpp: float | None = None) -> np.ndarray:
        """QC labels uint8 ``(y1 - y0, x1 - x0)`` of rows ``y0:y1`` and columns ``x0:x1`` of a grid of
        ``mpp`` um/px aligned with level-0 (0, 0) (each pixel takes the label under its centre), with the
        blurred blocks of ``focus`` (a grid at ``analysis_mpp``) marked blur where they cover tissue."""
        rows = self._index(y0, y1, mpp, self.labels.shape[0])
        cols = self._index(x0, x1, mpp, self.labels.shape[1])
        # beyond the thumbnail (index -1) is the padding's last row/column: background
        out = np.ascontiguousarray(self._padded.take(rows, axis=0).take(cols, axis=1))
        if focus is not None and analysis_mpp is not None:
            blurred = focus.mask(y0, y1, x0, x1, mpp / analysis_mpp)
            out[blurred & (out == QCLabel.TISSUE)] = QCLabel.BLUR
        return out

    @functools.cached_property
    def _padded(self) -> np.ndarray:
        """``labels`` with one more row and column of background (what index -1 picks)."""
        return np.pad(self.labels, ((0, 1), (0, 1)))

    def _index(self, start: int, stop: int, mpp: float, size: int) -> np.ndarray:
        """Thumbnail index under the centre of each pixel ``start..stop - 1`` of a grid of ``mpp`` um/px
        (-1 beyond the thumbnail)."""
        index = np.floor((np.arange(start, stop) + 0.5) * (mpp / self.mpp)).astype(np.int64)
        index[index >= size] = -1
        return np.asarray(index)


def tissue_of(rgb: np.ndarray, mpp: float, settings: TissueSettings) -> np.ndarray:
    """The tissue mask (bool ``(h, w)``) of an RGB uint8 thumbnail at ``mpp`` um/px with these settings."""
    return tissue_from_rgb(rgb, mpp, min_area_um2=settings.min_area_um2, smooth_um=settings.smooth_um,
                           max_hole_um2=settings.max_hole_um2, min_saturation=settings.min_saturation)


def assess_thumbnail(rgb: np.ndarray, mpp: float, slide_mpp: tuple[float, float], settings: QCSettings,
                     model: InkColourModel | None = None) -> QCMap:
    """The :class:`QCMap` of an RGB uint8 thumbnail ``(h, w, 3)`` at ``mpp`` um/px.

    Tissue and ink are detected independently, on two threads (numpy and scipy release the GIL for most of
    the work: 0.9 s instead of 1.1-1.2 s for a 1280 px thumbnail on two cores)."""
    with ThreadPoolExecutor(1, thread_name_prefix="wsiseg-ink") as pool:
        inked = (pool.submit(detect_ink, rgb, mpp, model or InkColourModel.load(), settings.pen)
                 if settings.pen.enabled else None)
        tissue = tissue_of(rgb, mpp, settings.tissue)
    labels = tissue.astype(np.uint8) * np.uint8(QCLabel.TISSUE)
    if inked is not None:
        pen = inked.result()
        labels[pen | _slivers(tissue & ~pen, mpp, settings.tissue)] = QCLabel.PEN
    return QCMap(labels, tissue, mpp, slide_mpp)


def _slivers(analysable: np.ndarray, mpp: float, settings: TissueSettings) -> np.ndarray:
    """What taking ink out of the tissue left that is thinner than twice ``smooth_um`` (the faint rims of
    strokes, which tissue detection itself would have smoothed away)."""
    radius = round(settings.smooth_um / mpp)
    if radius < 1:
        return np.zeros(analysable.shape, bool)
    pad = 2 * radius  # tissue cut by the image's edge is not thin: replicate the edge, as tissue detection
    opened = morphology.open_(np.pad(analysable, pad, mode="edge"), radius)[pad:-pad, pad:-pad]
    return np.asarray(analysable & ~opened)


def assess_slide(slide: Slide, settings: QCSettings | None = None,
                 model: InkColourModel | None = None) -> tuple[QCMap, np.ndarray]:
    """Read the slide's thumbnail (at :func:`~wsiseg.slide.tissue.thumbnail_mpp` of
    ``settings.tissue.mpp``) and assess it: ``(QCMap, thumbnail RGB uint8)``."""
    settings = settings or QCSettings()
    mpp = thumbnail_mpp(slide, settings.tissue.mpp)
    thumb = slide.thumbnail(mpp)
    return assess_thumbnail(thumb, mpp, slide.mpp, settings, model), thumb


@dataclass(frozen=True)
class QCAreas:
    """Areas (um^2) per QC label of one slide; ``tissue_um2`` counts every label but background."""

    areas_um2: dict[str, float]

    @property
    def tissue_um2(self) -> float:
        return sum(a for name, a in self.areas_um2.items() if name != QCLabel.BACKGROUND.title)

    @property
    def analysable_um2(self) -> float:
        return self.areas_um2.get(QCLabel.TISSUE.title, 0.0)

    @property
    def excluded_um2(self) -> dict[str, float]:
        """Artifact areas by name (``pen``, ``blur``)."""
        return {label.title: self.areas_um2.get(label.title, 0.0) for label in ARTIFACTS}

    def share(self, name: str) -> float:
        """Share of the tissue (0..1) with label ``name``."""
        total = self.tissue_um2
        return self.areas_um2.get(name, 0.0) / total if total > 0 else 0.0

    @property
    def excluded_share(self) -> float:
        return sum(self.share(name) for name in self.excluded_um2)

    def to_dict(self) -> dict[str, Any]:
        """What outputs and QC tables record."""
        return {"tissue_um2": self.tissue_um2, "analysable_um2": self.analysable_um2,
                "excluded_share": self.excluded_share,
                "labels": {name: {"area_um2": a, "share_of_tissue": self.share(name)}
                           for name, a in self.areas_um2.items() if name != QCLabel.BACKGROUND.title}}

    @classmethod
    def count(cls, labels: np.ndarray, weights_y: np.ndarray, weights_x: np.ndarray) -> QCAreas:
        """Areas of a label image whose pixel ``(i, j)`` covers ``weights_y[i] * weights_x[j]`` um^2."""
        totals = np.zeros(len(QCLabel))
        for i in range(0, labels.shape[0], 1024):
            block = labels[i:i + 1024].astype(np.int64)
            w = np.outer(weights_y[i:i + 1024], weights_x)
            totals += np.bincount(block.ravel(), weights=w.ravel(), minlength=len(QCLabel))[:len(QCLabel)]
        return cls({label.title: float(totals[label]) for label in QCLabel})

    def __add__(self, other: QCAreas) -> QCAreas:
        names = {*self.areas_um2, *other.areas_um2}
        return QCAreas({n: self.areas_um2.get(n, 0.0) + other.areas_um2.get(n, 0.0) for n in names})
