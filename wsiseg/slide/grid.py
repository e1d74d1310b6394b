"""The tile grid: square tiles at the analysis resolution that cover the whole slide.

Tiles are ``tile_size x tile_size`` analysis pixels (``_t``); consecutive tiles start ``step = tile_size -
overlap`` pixels apart, so tile ``(col, row)`` starts at ``x_t = col * step``, ``y_t = row * step``. The
last column/row may reach past the slide's edge (those pixels read as white and are cropped by writers).
The sizes come from a :class:`~wsiseg.tiling.Tiling`, checked when it was made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wsiseg.slide.reader import Slide
from wsiseg.slide.tissue import TissueMask
from wsiseg.tiling import Tiling


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
    def step(self) -> int:
        """Distance between tile origins in analysis pixels (``tile_size - overlap``)."""
        return self.tile_size - self.overlap

    @property
    def n_total(self) -> int:
        """Tiles in the full grid, before tissue filtering."""
        return self.n_cols * self.n_rows

    def __len__(self) -> int:
        return len(self.tiles)


def grid_extent(length: int, tile_size: int, overlap: int) -> int:
    """Tiles needed along one axis so that tiles ``0..n-1``, ``tile_size - overlap`` apart, cover ``length``
    pixels (any one frame for all three)."""
    step = tile_size - overlap
    return 1 + max(0, math.ceil((length - tile_size) / step))


def make_tile_grid(slide: Slide, tiling: Tiling, tissue: TissueMask | None = None,
                   min_tissue_fraction: float = 0.0) -> TileGrid:
    """Tile ``slide`` with ``tiling`` (its ``mpp``, ``tile_size`` and ``overlap``).

    With ``tissue``, only tiles whose level-0 footprint touches tissue are kept: the fraction of tissue
    mask pixels under the tile must be ``> 0`` and ``>= min_tissue_fraction`` (in 0..1).
    """
    mpp, tile_size, overlap, step = tiling.mpp, tiling.tile_size, tiling.overlap, tiling.step
    width_t, height_t = slide.size_at(mpp)
    n_cols, n_rows = grid_extent(width_t, tile_size, overlap), grid_extent(height_t, tile_size, overlap)
    sx, sy = mpp / slide.mpp[0], mpp / slide.mpp[1]  # level-0 pixels per analysis pixel
    side_x0, side_y0 = tile_size * sx, tile_size * sy
    tiles = []
    for row in range(n_rows):
        y_t = row * step
        y0f = y_t * sy
        for col in range(n_cols):
            x_t = col * step
            x0f = x_t * sx
            if tissue is not None:
                f = tissue.fraction(x0f, y0f, side_x0, side_y0)
                if f <= 0.0 or f < min_tissue_fraction:
                    continue
            tiles.append(Tile(row * n_cols + col, col, row, x_t, y_t, round(x0f), round(y0f)))
    return TileGrid(mpp, tile_size, overlap, width_t, height_t, n_cols, n_rows, tuple(tiles))
