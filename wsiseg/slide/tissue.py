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
from wsiseg.slide.reader import Slide

#: Saturation below this is never tissue (glass, dust, and blank slides whose Otsu split is noise).
MIN_SATURATION = 0.07
#: Saturation above this is always tissue: Otsu splits stained tissue from glass, but on slides with much
#: dense tissue it lands between pale (necrotic, oedematous) and dense tissue, so it is capped here.
MAX_THRESHOLD = 0.12
#: Thumbnails for tissue detection have at least this many pixels along the longer side.
MIN_THUMBNAIL_PX = 512
#: Pixels darker than this (max RGB) are pen marks, folds or slide edges, not tissue, unless saturated.
DARK_VALUE = 0.12


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
        integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
        np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=integral[1:, 1:])
        object.__setattr__(self, "_integral", integral)

    @property
    def tissue_fraction(self) -> float:
        """Fraction of the mask's pixels that are tissue (0..1)."""
        return float(self.mask.mean()) if self.mask.size else 0.0

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


def _saturation_value(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV saturation and value (0..1, float32) of an RGB uint8 image."""
    mx = rgb.max(axis=2).astype(np.float32)
    mn = rgb.min(axis=2).astype(np.float32)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0.0).astype(np.float32)
    return sat, mx / 255.0


def _otsu(values: np.ndarray) -> float:
    """Otsu threshold of values in 0..1 (256 bins)."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def _disk(radius: int) -> np.ndarray:
    r = max(int(radius), 0)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return np.asarray(xx * xx + yy * yy <= r * r)


def detect_tissue(slide: Slide, mpp: float = 8.0, *, min_area_um2: float = 20_000.0,
                  smooth_um: float = 16.0, max_hole_um2: float = 50_000.0,
                  min_saturation: float = MIN_SATURATION) -> TissueMask:
    """Detect tissue on a thumbnail at ``mpp`` um/px (8-16 suits H&E).

    ``mpp`` is an upper bound: small slides and images are analysed on a finer thumbnail with at least
    :data:`MIN_THUMBNAIL_PX` pixels along its longer side (never finer than level 0); the returned mask's
    ``mpp`` says which resolution was used.

    Saturation (HSV) thresholded by Otsu, clipped to ``min_saturation`` .. :data:`MAX_THRESHOLD` (so a
    blank slide has no tissue and pale tissue is kept), very dark unsaturated pixels dropped, then
    closing and opening with a disk of radius ``smooth_um`` microns, enclosed holes smaller than
    ``max_hole_um2`` square microns filled (lumens, fat cells), and connected
    components smaller than ``min_area_um2`` square microns removed. Coarser ``mpp`` is faster;
    memory is that of one thumbnail.
    """
    w0, h0 = slide.dimensions
    long_um = max(w0 * slide.mpp[0], h0 * slide.mpp[1])
    mpp = min(mpp, max(slide.mpp[0], long_um / MIN_THUMBNAIL_PX))
    thumb = slide.thumbnail(mpp)
    mask = tissue_from_rgb(thumb, mpp, min_area_um2=min_area_um2, smooth_um=smooth_um,
                           max_hole_um2=max_hole_um2, min_saturation=min_saturation)
    return TissueMask(mask, mpp, slide.mpp)


def _fill_small_holes(mask: np.ndarray, max_hole_px: float) -> np.ndarray:
    """Fill background components enclosed by tissue (not touching the border) of < ``max_hole_px`` pixels."""
    holes, n = ndimage.label(~mask)
    if n == 0:
        return mask
    areas = np.bincount(holes.ravel(), minlength=n + 1)
    fill = areas < max_hole_px
    fill[0] = False
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    fill[border] = False
    return np.asarray(mask | fill[holes])


def tissue_from_rgb(rgb: np.ndarray, mpp: float, *, min_area_um2: float = 20_000.0, smooth_um: float = 16.0,
                    max_hole_um2: float = 50_000.0, min_saturation: float = MIN_SATURATION) -> np.ndarray:
    """The tissue mask (bool ``(h, w)``) of an RGB uint8 image at ``mpp`` um/px; see :func:`detect_tissue`."""
    sat, val = _saturation_value(rgb)
    threshold = min(max(_otsu(sat), min_saturation), max(MAX_THRESHOLD, min_saturation))
    mask = (sat >= threshold) & ~((val < DARK_VALUE) & (sat < 0.5))
    radius = round(smooth_um / mpp)
    if radius >= 1:
        # Pad by replicating the edge so that tissue cut by the slide border is not eroded away.
        disk = _disk(radius)
        pad = 2 * radius
        padded = np.pad(mask, pad, mode="edge")
        padded = ndimage.binary_closing(padded, structure=disk)
        padded = ndimage.binary_opening(padded, structure=disk)
        mask = padded[pad:-pad, pad:-pad]
    mask = _fill_small_holes(mask, max_hole_um2 / (mpp * mpp))
    labels, n = ndimage.label(mask)
    if n:
        areas = np.bincount(labels.ravel(), minlength=n + 1) * (mpp * mpp)
        keep = areas >= min_area_um2
        keep[0] = False
        mask = keep[labels]
    return np.asarray(mask, dtype=bool)


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
