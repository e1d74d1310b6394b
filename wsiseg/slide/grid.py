"""The tile grid: square tiles at a target resolution that cover the whole slide.

Tiles are ``tile_size x tile_size`` target pixels; consecutive tiles start ``stride = tile_size - overlap``
target pixels apart, so tile ``(col, row)`` starts at ``x_t = col * stride``, ``y_t = row * stride``. The
last column/row may reach past the slide's edge (those pixels read as white and are cropped by writers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wsiseg.errors import ConfigError
from wsiseg.slide.reader import Slide
from wsiseg.slide.tissue import TissueMask


@dataclass(frozen=True)
class Tile:
    """One tile: its position in the grid, its top-left at the target resolution (``x_t, y_t``) and at
    level 0 (``x0, y0``, rounded to whole level-0 pixels). ``index`` is its row-major position in the
    full (unfiltered) grid: ``row * n_cols + col``."""

    index: int
    col: int
    row: int
    x_t: int
    y_t: int
    x0: int
    y0: int


@dataclass(frozen=True)
class TileGrid:
    """Tiles covering a slide at ``mpp`` um/px; ``tiles`` is row-major and possibly tissue-filtered."""

    mpp: float
    tile_size: int
    overlap: int
    width_t: int
    height_t: int
    n_cols: int
    n_rows: int
    tiles: tuple[Tile, ...]

    @property
    def stride(self) -> int:
        """Distance between tile origins in target pixels (``tile_size - overlap``)."""
        return self.tile_size - self.overlap

    @property
    def n_total(self) -> int:
        """Tiles in the full grid, before tissue filtering."""
        return self.n_cols * self.n_rows

    def __len__(self) -> int:
        return len(self.tiles)


def grid_extent(length_t: int, tile_size: int, overlap: int) -> int:
    """Tiles needed along one axis so that tiles ``0..n-1`` at ``stride`` cover ``length_t`` pixels."""
    stride = tile_size - overlap
    return 1 + max(0, math.ceil((length_t - tile_size) / stride))


def make_tile_grid(slide: Slide, mpp: float, tile_size: int, overlap: int = 0,
                   tissue: TissueMask | None = None, min_tissue_fraction: float = 0.0) -> TileGrid:
    """Tile ``slide`` at ``mpp`` um/px with ``tile_size``-pixel tiles overlapping by ``overlap`` pixels.

    With ``tissue``, only tiles whose level-0 footprint touches tissue are kept: the fraction of tissue
    mask pixels under the tile must be ``> 0`` and ``>= min_tissue_fraction``. Raises
    :class:`ConfigError` for invalid sizes.
    """
    if not (isinstance(tile_size, int) and tile_size >= 1):
        raise ConfigError(f"tile size must be a positive number of pixels, got {tile_size}")
    if not (isinstance(overlap, int) and 0 <= overlap < tile_size):
        raise ConfigError(f"overlap must be between 0 and tile size - 1 ({tile_size - 1}), got {overlap}")
    if not (math.isfinite(mpp) and mpp > 0):
        raise ConfigError(f"mpp must be a positive number of microns per pixel, got {mpp}")
    if not 0.0 <= min_tissue_fraction <= 1.0:
        raise ConfigError(f"minimum tissue fraction must be in 0..1, got {min_tissue_fraction}")
    width_t, height_t = slide.size_at(mpp)
    stride = tile_size - overlap
    n_cols, n_rows = grid_extent(width_t, tile_size, overlap), grid_extent(height_t, tile_size, overlap)
    sx, sy = mpp / slide.mpp[0], mpp / slide.mpp[1]  # level-0 pixels per target pixel
    side_x0, side_y0 = tile_size * sx, tile_size * sy
    tiles = []
    for row in range(n_rows):
        y_t = row * stride
        y0f = y_t * sy
        for col in range(n_cols):
            x_t = col * stride
            x0f = x_t * sx
            if tissue is not None:
                f = tissue.fraction(x0f, y0f, side_x0, side_y0)
                if f <= 0.0 or f < min_tissue_fraction:
                    continue
            tiles.append(Tile(row * n_cols + col, col, row, x_t, y_t, round(x0f), round(y0f)))
    return TileGrid(mpp, tile_size, overlap, width_t, height_t, n_cols, n_rows, tuple(tiles))
