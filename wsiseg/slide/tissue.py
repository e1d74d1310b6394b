"""Tissue masks: detected on a low-resolution thumbnail, or given by the user.

A :class:`TissueMask` is a boolean image at its own resolution (``mpp`` um/px) that covers the whole
slide from level-0 pixel (0, 0); :meth:`TissueMask.fraction` answers "how much of this level-0 rectangle
is tissue" in O(1) with a summed-area table, which is what the tile grid filters on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from wsiseg.errors import SlideError
from wsiseg.slide import morphology
from wsiseg.slide.reader import Slide

#: Saturation below this is never tissue (glass, dust, and blank slides whose Otsu split is noise).
MIN_SATURATION = 0.07
#: Saturation above this is always tissue: Otsu splits stained tissue from glass, but on slides with much
#: dense tissue it lands between pale (necrotic, oedematous) and dense tissue, so it is capped here.
MAX_THRESHOLD = 0.12
#: Thumbnails for tissue detection have at least this many pixels along the longer side.
MIN_THUMBNAIL_PX = 512
#: Thumbnails for tissue detection have at most this many pixels along the longer side: larger slides are
#: analysed at a coarser mpp, so the memory of detection is bounded whatever the slide size.
MAX_THUMBNAIL_PX = 2048
#: Pixels darker than this (max RGB) are pen marks, folds or slide edges, not tissue, unless saturated.
DARK_VALUE = 0.12
#: Rows of the thumbnail processed at once by the per-pixel passes, so their float and index temporaries
#: are a strip (a few MB), not a thumbnail.
_STRIP_ROWS = 256


@dataclass(frozen=True, eq=False)
class TissueMask:
    """A boolean tissue mask ``(h, w)`` at ``mpp`` um/px, aligned with level-0 pixel (0, 0).

    ``slide_mpp`` is the slide's level-0 ``(mpp_x, mpp_y)``, used to map level-0 rectangles onto the mask.
    """

    mask: np.ndarray
    mpp: float
    slide_mpp: tuple[float, float]
    _integral: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"a tissue mask is 2-D (h, w), got shape {mask.shape}")
        if not (math.isfinite(self.mpp) and self.mpp > 0):
            raise ValueError(f"mask mpp must be positive, got {self.mpp}")
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "_integral", _summed_area(mask))

    @property
    def tissue_fraction(self) -> float:
        """Fraction of the mask's pixels that are tissue (0..1)."""
        return float(self._integral[-1, -1]) / self.mask.size if self.mask.size else 0.0

    def fraction(self, x0: float, y0: float, w0: float, h0: float) -> float:
        """Fraction (0..1) of mask pixels touched by the level-0 rectangle that are tissue.

        Mask pixels partly covered by the rectangle count fully, so a rectangle that touches tissue
        anywhere returns a fraction > 0. Parts outside the mask count as background.
        """
        if w0 <= 0 or h0 <= 0:
            return 0.0
        sx, sy = self.slide_mpp[0] / self.mpp, self.slide_mpp[1] / self.mpp  # mask px per level-0 px
        xa, ya = math.floor(x0 * sx + 1e-9), math.floor(y0 * sy + 1e-9)
        xb, yb = math.ceil((x0 + w0) * sx - 1e-9), math.ceil((y0 + h0) * sy - 1e-9)
        area = max(xb - xa, 1) * max(yb - ya, 1)
        h, w = self.mask.shape
        xa, xb = min(max(xa, 0), w), min(max(xb, 0), w)
        ya, yb = min(max(ya, 0), h), min(max(yb, 0), h)
        if xa >= xb or ya >= yb:
            return 0.0
        s = self._integral
        count = int(s[yb, xb] - s[ya, xb] - s[yb, xa] + s[ya, xa])
        return count / area


def _summed_area(mask: np.ndarray) -> np.ndarray:
    """Summed-area table ``(h + 1, w + 1)`` of a bool mask ``(h, w)``: ``s[y, x]`` counts ``mask[:y, :x]``.

    int32 (4 bytes per pixel) when the count fits, else int64; built by strips without a second full-size
    array: each strip of rows is summed along rows, then down the strip, on top of the row above it.
    """
    h, w = mask.shape
    dtype = np.int32 if (h + 1) * (w + 1) < 2**31 else np.int64
    integral = np.zeros((h + 1, w + 1), dtype)
    for y in range(0, h, _STRIP_ROWS):
        block = np.cumsum(mask[y:y + _STRIP_ROWS], axis=1, dtype=dtype)
        np.cumsum(block, axis=0, out=block)
        np.add(block, integral[y, 1:], out=block)
        integral[y + 1:y + 1 + block.shape[0], 1:] = block
    return integral


def _saturation_value(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV saturation and value (0..1, float32, ``(h, w)``) of an RGB uint8 image ``(h, w, 3)``.

    Callers pass strips of rows: the two planes are 8 bytes per pixel.
    """
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # plane-wise: ~10x faster than reducing axis 2
    mx = np.maximum(np.maximum(r, g), b).astype(np.float32)
    mn = np.minimum(np.minimum(r, g), b).astype(np.float32)
    mn -= mx
    np.negative(mn, out=mn)  # max - min
    sat = np.divide(mn, np.maximum(mx, np.float32(1)), out=mn)  # 0 where max == 0 (then max - min == 0)
    mx /= np.float32(255)
    return sat, mx


def _otsu(hist: np.ndarray, edges: np.ndarray) -> float:
    """Otsu threshold (a bin centre) of a histogram ``hist`` (counts per bin) with bin ``edges``."""
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def thumbnail_mpp(slide: Slide, mpp: float) -> float:
    """The resolution (um/px) a slide's thumbnail is analysed at for a target ``mpp``: at least
    :data:`MIN_THUMBNAIL_PX` and at most :data:`MAX_THUMBNAIL_PX` pixels along the longer side, never finer
    than level 0 (see :func:`detect_tissue`)."""
    w0, h0 = slide.dimensions
    long_um = max(w0 * slide.mpp[0], h0 * slide.mpp[1])
    mpp = min(mpp, max(slide.mpp[0], long_um / MIN_THUMBNAIL_PX))
    return max(mpp, long_um / MAX_THUMBNAIL_PX)


def detect_tissue(slide: Slide, mpp: float = 8.0, *, min_area_um2: float = 20_000.0,
                  smooth_um: float = 16.0, max_hole_um2: float = 50_000.0,
                  min_saturation: float = MIN_SATURATION) -> TissueMask:
    """Detect tissue on a thumbnail at ``mpp`` um/px (8-16 suits H&E).

    ``mpp`` is a target, bounded on both sides: small slides and images are analysed on a finer thumbnail
    with at least :data:`MIN_THUMBNAIL_PX` pixels along its longer side (never finer than level 0), and
    large slides on a coarser one with at most :data:`MAX_THUMBNAIL_PX` pixels along its longer side (a
    100 000 px slide at 0.5 um/px is analysed at 24.4 um/px rather than 8, still ~20 px across a 1024 px
    tile), so memory does not grow with the slide. The returned mask's ``mpp`` says which resolution was used.

    Saturation (HSV) thresholded by Otsu, clipped to ``min_saturation`` .. :data:`MAX_THRESHOLD` (so a
    blank slide has no tissue and pale tissue is kept), very dark unsaturated pixels dropped, then
    closing and opening with a disk of radius ``smooth_um`` microns, enclosed holes smaller than
    ``max_hole_um2`` square microns filled (lumens, fat cells), and connected
    components smaller than ``min_area_um2`` square microns removed. Coarser ``mpp`` is faster.

    Memory: the RGB thumbnail (3 bytes per pixel, at most ``MAX_THUMBNAIL_PX ** 2`` pixels) plus about
    4 bytes per pixel while detecting (see :func:`tissue_from_rgb`), then the mask and its summed-area
    table (5 bytes per pixel): about 50 MB at most, whatever the slide size. Reading the thumbnail
    (:meth:`Slide.thumbnail`, by blocks) has its own peak, also bounded by the cap.
    """
    mpp = thumbnail_mpp(slide, mpp)
    thumb = slide.thumbnail(mpp)
    mask = tissue_from_rgb(thumb, mpp, min_area_um2=min_area_um2, smooth_um=smooth_um,
                           max_hole_um2=max_hole_um2, min_saturation=min_saturation)
    del thumb  # the thumbnail need not live alongside the summed-area table
    return TissueMask(mask, mpp, slide.mpp)


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """``ndimage.label`` (4-connected) into uint16 labels (2 bytes per pixel), or int32 if there are more."""
    try:
        labels, n = ndimage.label(mask, output=np.uint16)
    except RuntimeError:  # more than 65 535 components: scipy refuses the narrowing
        labels, n = ndimage.label(mask)
    return labels, int(n)


def _areas(labels: np.ndarray, n: int) -> np.ndarray:
    """Pixel count of each label ``0..n`` (int64 ``(n + 1,)``), counted by strips of rows.

    ``np.bincount`` converts its input to intp (8 bytes per pixel); strips keep that temporary small.
    """
    areas = np.zeros(n + 1, np.int64)
    for y in range(0, labels.shape[0], _STRIP_ROWS):
        areas += np.bincount(labels[y:y + _STRIP_ROWS].ravel(), minlength=n + 1)
    return areas


def _fill_small_holes(mask: np.ndarray, max_hole_px: float) -> None:
    """Fill, in place, background components enclosed by tissue (not touching the border) of <
    ``max_hole_px`` pixels."""
    holes, n = _label(~mask)
    if n == 0:
        return
    fill = _areas(holes, n) < max_hole_px
    fill[0] = False
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    fill[border] = False
    for y in range(0, mask.shape[0], _STRIP_ROWS):
        mask[y:y + _STRIP_ROWS] |= fill[holes[y:y + _STRIP_ROWS]]


def _remove_small_components(mask: np.ndarray, min_area_um2: float, px_um2: float) -> None:
    """Clear, in place, the connected tissue components smaller than ``min_area_um2`` square microns
    (a pixel is ``px_um2`` square microns)."""
    labels, n = _label(mask)
    if n == 0:
        return
    keep = _areas(labels, n) * px_um2 >= min_area_um2
    keep[0] = False
    for y in range(0, mask.shape[0], _STRIP_ROWS):
        mask[y:y + _STRIP_ROWS] = keep[labels[y:y + _STRIP_ROWS]]


def _threshold_mask(rgb: np.ndarray, out: np.ndarray, min_saturation: float) -> None:
    """Write the thresholded (unsmoothed) tissue mask of ``rgb`` ``(h, w, 3)`` into ``out`` ``(h, w)``.

    Two passes over strips of rows (histogram of saturation for Otsu, then the threshold), so the float
    planes exist only a strip at a time. The histogram of a union of strips is the sum of their
    histograms, so the threshold is that of the whole image.
    """
    hist: np.ndarray | None = None
    edges = np.zeros(0)
    for y in range(0, rgb.shape[0], _STRIP_ROWS):
        sat, _ = _saturation_value(rgb[y:y + _STRIP_ROWS])
        counts, edges = np.histogram(sat, bins=256, range=(0.0, 1.0))
        hist = counts if hist is None else hist + counts
    if hist is None:  # no rows
        return
    threshold = min(max(_otsu(hist, edges), min_saturation), max(MAX_THRESHOLD, min_saturation))
    for y in range(0, rgb.shape[0], _STRIP_ROWS):
        sat, val = _saturation_value(rgb[y:y + _STRIP_ROWS])
        out[y:y + _STRIP_ROWS] = (sat >= threshold) & ~((val < DARK_VALUE) & (sat < 0.5))


def tissue_from_rgb(rgb: np.ndarray, mpp: float, *, min_area_um2: float = 20_000.0, smooth_um: float = 16.0,
                    max_hole_um2: float = 50_000.0, min_saturation: float = MIN_SATURATION) -> np.ndarray:
    """The tissue mask (bool ``(h, w)``) of an RGB uint8 image at ``mpp`` um/px; see :func:`detect_tissue`.

    Extra memory is about 4 bytes per pixel at peak (two bool planes for the morphology, then the mask,
    its complement and uint16 labels for the holes) plus strips of a few MB; more only when an image has
    over 65 535 connected components or holes (int32 labels).
    """
    h, w = rgb.shape[:2]
    radius = round(smooth_um / mpp)
    if radius < 1 or h == 0 or w == 0:
        mask = np.empty((h, w), bool)
        _threshold_mask(rgb, mask, min_saturation)
    else:
        # Pad by replicating the edge so that tissue cut by the slide border is not eroded away; closing
        # and opening by distance transforms (wsiseg.slide.morphology), whose cost does not grow with
        # the radius.
        pad = 2 * radius
        a = np.empty((h + 2 * pad, w + 2 * pad), bool)
        _threshold_mask(rgb, a[pad:-pad, pad:-pad], min_saturation)
        a[:pad, pad:-pad] = a[pad, pad:-pad]
        a[-pad:, pad:-pad] = a[-pad - 1, pad:-pad]
        a[:, :pad] = a[:, pad:pad + 1]
        a[:, -pad:] = a[:, -pad - 1:-pad]
        a = morphology.close(a, radius)
        a = morphology.open_(a, radius)  # one result at a time: a few bytes per pixel at most
        mask = a[pad:-pad, pad:-pad].copy()
        del a
    _fill_small_holes(mask, max_hole_um2 / (mpp * mpp))
    _remove_small_components(mask, min_area_um2, mpp * mpp)
    return mask


def tissue_mask_from_image(mask: str | Path | np.ndarray, slide: Slide) -> TissueMask:
    """Wrap a user mask (a path to a PNG/TIFF, or an array; non-zero = tissue) covering the whole slide.

    The mask may be at any resolution with the slide's aspect ratio (within 2 %); its mpp follows from
    its width. Raises :class:`SlideError` when it cannot be read or does not match the slide.
    """
    if isinstance(mask, (str, Path)):
        array = _read_mask(Path(mask))
        name = str(mask)
    else:
        array = np.asarray(mask)
        name = "the mask array"
    if array.ndim == 3:
        if array.shape[2] in (2, 4):  # drop alpha: an opaque mask is not "all tissue"
            array = array[..., :-1]
        array = array.max(axis=2)
    if array.ndim != 2 or array.size == 0:
        raise SlideError(f"{name} must be a 2-D image, got shape {array.shape}")
    h, w = array.shape
    w0, h0 = slide.dimensions
    mpp_x = slide.mpp[0] * w0 / w
    mpp_y = slide.mpp[1] * h0 / h
    if abs(mpp_x / mpp_y - 1) > 0.02:
        raise SlideError(f"{name} is {w}x{h} but the slide is {w0}x{h0}: aspect ratios differ; "
                         "a tissue mask must cover the whole slide")
    return TissueMask(array > 0, (mpp_x + mpp_y) / 2, slide.mpp)


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise SlideError(f"mask not found: {path}")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except Exception as exc:  # any decoder failure is a user-facing "cannot read"
        raise SlideError(f"cannot read mask {path}: {exc}") from exc
