"""Blending windows: how much each pixel of a predicted tile counts where tiles overlap.

A window is a ``(tile_size, tile_size)`` float32 array of strictly positive weights (never exactly 0, so a
pixel covered by a single tile, e.g. at the slide edge or next to a skipped background tile, keeps that
tile's prediction). Stitched probabilities are ``sum(w * p) / sum(w)`` over the tiles covering a pixel.
"""

from __future__ import annotations

import enum

import numpy as np

from wsiseg.errors import ConfigError

#: The smallest weight a window may give; keeps ``sum(w)`` well away from 0 in float32.
MIN_WEIGHT = 1e-3


class BlendWindow(str, enum.Enum):
    """Shape of the weight window.

    - ``COSINE``: 1 in the tile interior; a raised-cosine ramp across the ``overlap`` pixels at each border.
      Two neighbouring ramps sum to exactly 1 (``sin^2 + cos^2``), so the blend is a partition of unity.
    - ``GAUSSIAN``: a 2-D Gaussian with sigma = tile_size / 8 centred on the tile (as in nnU-Net/MONAI).
    - ``UNIFORM``: all ones (plain averaging; shows seams where neighbouring predictions disagree).
    """

    COSINE = "cosine"
    GAUSSIAN = "gaussian"
    UNIFORM = "uniform"


def _profile(tile_size: int, overlap: int, kind: BlendWindow) -> np.ndarray:
    """1-D weight profile of length ``tile_size`` (float64)."""
    x = np.arange(tile_size, dtype=np.float64)
    if kind is BlendWindow.UNIFORM or (kind is BlendWindow.COSINE and overlap == 0):
        return np.ones(tile_size)
    if kind is BlendWindow.COSINE:
        prof = np.ones(tile_size)
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        prof[:overlap] = ramp
        prof[tile_size - overlap:] = np.minimum(prof[tile_size - overlap:], ramp[::-1])
        return prof
    if kind is BlendWindow.GAUSSIAN:
        centre = (tile_size - 1) / 2.0
        sigma = tile_size / 8.0
        gauss: np.ndarray = np.exp(-((x - centre) ** 2) / (2.0 * sigma**2))
        gauss /= gauss.max()
        return gauss
    raise ConfigError(f"unknown blend window {kind!r}")


def blend_window(tile_size: int, overlap: int, kind: BlendWindow = BlendWindow.COSINE) -> np.ndarray:
    """Weight window for tiles of ``tile_size`` pixels overlapping their neighbours by ``overlap``
    (``0 <= overlap <= tile_size / 2``, as a :class:`~wsiseg.tiling.Tiling` guarantees).

    Returns a ``(tile_size, tile_size)`` float32 array, the outer product of a 1-D profile with itself,
    clipped below at :data:`MIN_WEIGHT` and with maximum 1.
    """
    assert tile_size > 0 and 0 <= overlap <= tile_size // 2, "checked by Tiling.create"
    prof = np.maximum(_profile(tile_size, overlap, BlendWindow(kind)), MIN_WEIGHT)
    window = np.outer(prof, prof)
    return np.maximum(window, MIN_WEIGHT).astype(np.float32)
