"""The geometry of a segmentation run, validated once: :class:`Tiling`.

Three pixel frames, each named by its suffix (see docs/architecture.md):

- ``_0``/``x0, y0``: the slide's level 0;
- ``_t``: the analysis resolution ``mpp`` (um/px) at which tiles are read and given to the model;
- ``_o``: the output grid, ``output_stride`` analysis pixels per output pixel (``output_mpp = mpp *
  output_stride``), on which probabilities are stitched and written.

Words with one meaning each: ``step`` is the distance between the origins of neighbouring tiles
(``tile_size - overlap``); ``output_stride`` is analysis pixels per output pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wsiseg.errors import ConfigError, option

#: Default level-0 zarr chunk side of the output (output pixels).
DEFAULT_CHUNK_SIZE = 1024


def _positive_number(value: float, name: str) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number of microns per pixel, got {value!r}")
    return float(value)


def _whole(value: int, name: str, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise ConfigError(f"{name} must be a whole number >= {lowest}, got {value!r}")
    return value


@dataclass(frozen=True)
class Tiling:
    """How a slide is cut into tiles and where their predictions go; every check happens in
    :meth:`create` (one exception type, :class:`ConfigError`), so holders need not check again.

    ``mpp``: analysis resolution, um/px. ``tile_size``, ``overlap``: tile side and the pixels shared by
    neighbouring tiles, both in analysis pixels (``0 <= overlap <= tile_size / 2``). ``output_stride``:
    analysis pixels per output pixel; it divides ``tile_size`` and ``overlap``. ``chunk_size``: the output's
    level-0 zarr chunk side in output pixels, a power of two.
    """

    mpp: float
    tile_size: int
    overlap: int
    output_stride: int = 1
    chunk_size: int = DEFAULT_CHUNK_SIZE

    @classmethod
    def create(cls, mpp: float, tile_size: int, overlap: int | None = None, *, output_stride: int = 1,
               output_mpp: float | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tiling:
        """A checked tiling: ``overlap`` defaults to ``tile_size // 8``; ``output_mpp`` (um/px, a whole
        multiple of ``mpp``), when given, sets ``output_stride`` instead (``output_stride`` is then the
        model's native stride, used when ``output_mpp`` is None). Raises ConfigError."""
        mpp = _positive_number(mpp, option("mpp"))
        tile_size = _whole(tile_size, option("tile_size"), 1)
        overlap = tile_size // 8 if overlap is None else _whole(overlap, option("overlap"), 0)
        if overlap > tile_size // 2:
            raise ConfigError(f"{option('overlap')} must be between 0 and half the tile size "
                              f"({tile_size // 2}), got {overlap}")
        source = "the model's output grid"
        if output_mpp is not None:
            ratio = _positive_number(output_mpp, option("output_mpp")) / mpp
            output_stride = round(ratio)
            if output_stride < 1 or abs(ratio - output_stride) > 1e-6 * ratio:
                raise ConfigError(f"{option('output_mpp')} must be a whole multiple of {option('mpp')} "
                                  f"({mpp:g} um/px), got {output_mpp:g}")
            source = option("output_mpp")
        output_stride = max(1, _whole(output_stride, "the output stride", 1))
        if tile_size % output_stride or overlap % output_stride:
            raise ConfigError(f"{source} ({output_stride} analysis pixels per output pixel) must divide the "
                              f"tile size ({tile_size}) and the overlap ({overlap}); change "
                              f"{option('overlap')} or {option('output_mpp')}")
        if chunk_size < 1 or chunk_size & (chunk_size - 1):
            raise ConfigError(f"the chunk size must be a power of two, got {chunk_size}")
        return cls(mpp, tile_size, overlap, output_stride, chunk_size)

    @property
    def step(self) -> int:
        """Analysis pixels between the origins of neighbouring tiles (``tile_size - overlap``)."""
        return self.tile_size - self.overlap

    @property
    def output_mpp(self) -> float:
        """um/px of the output grid (the output pyramid's level 0)."""
        return self.mpp * self.output_stride

    @property
    def tile_o(self) -> int:
        """Tile side on the output grid (output pixels)."""
        return self.tile_size // self.output_stride

    @property
    def overlap_o(self) -> int:
        """Overlap on the output grid (output pixels)."""
        return self.overlap // self.output_stride

    @property
    def step_o(self) -> int:
        """Tile step on the output grid (output pixels)."""
        return self.step // self.output_stride

    def output_size(self, width_t: int, height_t: int) -> tuple[int, int]:
        """``(width_o, height_o)``: output pixels covering ``width_t x height_t`` analysis pixels (the last
        output pixel may reach up to ``output_stride - 1`` analysis pixels past the image)."""
        return -(-width_t // self.output_stride), -(-height_t // self.output_stride)

    def to_dict(self) -> dict[str, float | int]:
        """The parameters recorded in outputs (JSON)."""
        return {"mpp": self.mpp, "output_mpp": self.output_mpp, "tile_size": self.tile_size,
                "overlap": self.overlap, "output_stride": self.output_stride, "chunk_size": self.chunk_size}
