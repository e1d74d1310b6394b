"""Slide coordinate frames: OpenSlide's level 0 and QuPath's (cropped to the slide's bounds).

OpenSlide reports, for formats whose scanned area is a part of the level-0 plane (MIRAX, some
Hamamatsu, Leica and Ventana files), the properties ``openslide.bounds-x/-y/-width/-height``. QuPath's
OpenSlide image server crops such slides to that rectangle (its ``useBoundingBoxes`` default), so a
point drawn in QuPath at ``(x, y)`` is OpenSlide level-0 pixel ``(x + bounds.x, y + bounds.y)``, and the
image QuPath shows is ``bounds.width x bounds.height``. Without bounds both frames are the same.

wsiseg records the bounds in a segmentation's ``wsiseg.slide.bounds`` attribute (level-0 pixels);
:class:`SlideFrame` turns a frame choice into an origin (where the frame's ``(0, 0)`` lies in OpenSlide
level 0) and the slide's extent in that frame. Torch-free and numpy-free: the GeoJSON writer and the ROI
reader both use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any


class CoordinateFrame(str, Enum):
    """Which pixel frame coordinates are in.

    ``QUPATH``: QuPath's image (OpenSlide level 0 minus the bounds' top-left corner when the slide has
    bounds); ``OPENSLIDE``: OpenSlide's level 0, uncropped.
    """

    QUPATH = "qupath"
    OPENSLIDE = "openslide"


@dataclass(frozen=True)
class SlideBounds:
    """The scanned rectangle of a slide in OpenSlide level-0 pixels (``openslide.bounds-*``)."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def from_attrs(cls, value: Any) -> SlideBounds | None:
        """Parse ``{"x", "y", "width", "height"}`` (a segmentation's ``slide.bounds``); ``None`` when it is
        absent, null or not a rectangle of positive size (then the slide is used whole)."""
        if not isinstance(value, dict):
            return None
        try:
            numbers = [value[k] for k in ("x", "y", "width", "height")]
        except KeyError:
            return None
        if not all(isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n)
                   for n in numbers):
            return None
        x, y, width, height = (int(n) for n in numbers)
        if width <= 0 or height <= 0 or x < 0 or y < 0:
            return None
        return cls(x, y, width, height)

    def as_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class SlideFrame:
    """A coordinate frame of one slide.

    ``origin``: OpenSlide level-0 position of the frame's ``(0, 0)``; ``extent``: ``(min_x, min_y, max_x,
    max_y)`` of the slide in this frame: the bounds rectangle when the slide has bounds, else the whole
    level 0 (``None`` when the slide's size is unknown).
    """

    frame: CoordinateFrame
    origin: tuple[int, int]
    extent: tuple[float, float, float, float] | None

    @classmethod
    def of(cls, frame: CoordinateFrame | str, *, width0: float | None, height0: float | None,
           bounds: SlideBounds | None) -> SlideFrame:
        frame = CoordinateFrame(frame)
        if bounds is not None:
            origin = (bounds.x, bounds.y) if frame is CoordinateFrame.QUPATH else (0, 0)
            ox, oy = bounds.x - origin[0], bounds.y - origin[1]
            extent = (float(ox), float(oy), float(ox + bounds.width), float(oy + bounds.height))
            return cls(frame, origin, extent)
        whole = None if width0 is None or height0 is None else (0.0, 0.0, float(width0), float(height0))
        return cls(frame, (0, 0), whole)

    def to_openslide(self, x: float, y: float) -> tuple[float, float]:
        """A point of this frame in OpenSlide level-0 pixels."""
        return x + self.origin[0], y + self.origin[1]

    def from_openslide(self, x: float, y: float) -> tuple[float, float]:
        """An OpenSlide level-0 point in this frame."""
        return x - self.origin[0], y - self.origin[1]

    def describe(self) -> str:
        """One phrase for messages: the frame and, when it is shifted, by how much."""
        if self.origin == (0, 0):
            return f"{self.frame.value} frame (OpenSlide level 0)"
        return f"{self.frame.value} frame (OpenSlide level 0 minus ({self.origin[0]}, {self.origin[1]}))"

    def as_dict(self) -> dict[str, Any]:
        """What the GeoJSON FeatureCollection records about its coordinates."""
        return {"frame": self.frame.value, "origin_openslide": list(self.origin),
                "extent": None if self.extent is None else list(self.extent)}


def edge_weights(n: int, mpp: float, extent_um: float) -> list[float]:
    """Length (um) of each of ``n`` pixels of ``mpp`` um inside ``[0, extent_um)``: ``mpp`` for pixels wholly
    inside, less for the one the extent's end cuts, 0 beyond (a pixel grid that reaches past the slide)."""
    return [min(max(extent_um - i * mpp, 0.0), mpp) for i in range(n)]
