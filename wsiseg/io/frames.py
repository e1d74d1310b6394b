"""Which pixel frame GeoJSON coordinates are in: QuPath's (the default) or OpenSlide's level 0.

QuPath's OpenSlide image server crops slides that record bounds (``openslide.bounds-x/-y``: MIRAX, some
Hamamatsu and 3DHistech files; its ``useBoundingBoxes`` default) and uses the cropped frame as its pixel
coordinates. So a GeoJSON object at QuPath ``(x, y)`` lies at OpenSlide level-0 ``(x + bx, y + by)``. For
slides without bounds the two frames are the same.
"""

from __future__ import annotations

import enum


class CoordinateFrame(str, enum.Enum):
    """``qupath``: level 0 minus the slide's bounds offset (what QuPath shows); ``openslide``: level 0."""

    QUPATH = "qupath"
    OPENSLIDE = "openslide"

    def offset(self, bounds_xy: tuple[int, int] | None) -> tuple[int, int]:
        """Level-0 ``(x, y)`` of this frame's origin, given the slide's bounds offset (None: no bounds)."""
        if self is CoordinateFrame.OPENSLIDE or bounds_xy is None:
            return 0, 0
        return int(bounds_xy[0]), int(bounds_xy[1])
