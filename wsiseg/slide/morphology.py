"""Binary morphology with a disk, by Euclidean distance transforms: the cost does not grow with the radius.

A pixel is within the dilation of a mask by a disk of radius ``r`` (the structuring element ``x**2 + y**2
<= r**2``, :func:`disk`) exactly when its Euclidean distance to the nearest mask pixel is at most ``r``, so
one exact distance transform (:func:`scipy.ndimage.distance_transform_edt`) replaces the radius-squared work
of a structuring-element pass, and strips of rows keep its temporaries small: a 32 px disk on a 512 px
image costs milliseconds instead of seconds.
Squared distances are compared, so the result is exactly that of the structuring element, and pixels
outside the array count as "not in the mask" for both dilation and erosion, as in
:func:`scipy.ndimage.binary_dilation` / ``binary_erosion`` with their default ``border_value=0`` (pad the
array to say otherwise): the result equals theirs with :func:`disk` pixel for pixel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def disk(radius: int) -> np.ndarray:
    """The disk structuring element ``x**2 + y**2 <= radius**2`` (bool ``(2r + 1, 2r + 1)``)."""
    r = max(int(radius), 0)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return np.asarray(xx * xx + yy * yy <= r * r)


#: Rows per distance transform: the transform's float and index temporaries (~17 bytes per pixel) exist
#: for one strip (plus a halo of the radius above and below) at a time, never for the whole mask.
_STRIP_ROWS = 128


def _within(mask: np.ndarray, radius: float, *, complement: bool) -> np.ndarray:
    """Pixels at Euclidean distance <= ``radius`` from a True pixel of ``mask`` (or of ``~mask`` when
    ``complement``; outside the array counts as False, or as True when ``complement``), strip by strip:
    a pixel's nearest such pixel within ``radius`` lies within ``radius`` rows, so each strip is
    transformed with a halo of ``ceil(radius) + 1`` rows and columns."""
    h, w = mask.shape
    halo = int(np.ceil(radius)) + 1
    limit = float(radius) ** 2 + 1e-6
    out = np.empty((h, w), bool)
    for y in range(0, h, _STRIP_ROWS):
        y1 = min(h, y + _STRIP_ROWS)
        top, bottom = y - halo, y1 + halo
        block = np.full((bottom - top, w + 2 * halo), complement, bool)
        inner = mask[max(top, 0):min(bottom, h)]
        rows = slice(max(top, 0) - top, max(top, 0) - top + inner.shape[0])
        block[rows, halo:halo + w] = ~inner if complement else inner
        if not block.any():
            out[y:y1] = False
            continue
        if block.all():  # every pixel is at distance 0
            out[y:y1] = True
            continue
        distance = ndimage.distance_transform_edt(~block)
        out[y:y1] = (distance * distance <= limit)[y - top:y1 - top, halo:halo + w]
    return out


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilation of a bool ``(h, w)`` mask by the disk of ``radius`` pixels."""
    return _within(np.asarray(mask, bool), radius, complement=False)


def erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Erosion of a bool ``(h, w)`` mask by the disk of ``radius`` pixels (outside the array: not mask)."""
    eroded = _within(np.asarray(mask, bool), radius, complement=True)
    np.logical_not(eroded, out=eroded)
    return eroded


def close(mask: np.ndarray, radius: float) -> np.ndarray:
    """Closing (dilation, then erosion) by the disk of ``radius`` pixels."""
    return erode(dilate(mask, radius), radius)


def open_(mask: np.ndarray, radius: float) -> np.ndarray:
    """Opening (erosion, then dilation) by the disk of ``radius`` pixels."""
    return dilate(erode(mask, radius), radius)
