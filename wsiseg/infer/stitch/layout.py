"""The geometry the stitcher works in: the tile grid and the output chunk grid, in output pixels."""

from __future__ import annotations

import math
from dataclasses import dataclass

from wsiseg.slide.grid import TileGrid, grid_extent
from wsiseg.tiling import Tiling


@dataclass(frozen=True)
class Layout:
    """Tiles and output chunks on the output grid (``_o``: output pixels, see :mod:`wsiseg.tiling`).

    Tile ``(row, col)`` covers ``[row * step_o, row * step_o + tile_o)`` vertically (the same for x), with
    ``step_o = tile_o - overlap_o``; chunk ``(i, j)`` covers ``[i * chunk_size, (i + 1) * chunk_size)``
    clipped to the image. The tile grid covers the image (:meth:`of` and :meth:`covering` make sure of it;
    the ranges of the sizes are checked where they enter, in :class:`~wsiseg.tiling.Tiling`).
    """

    width_o: int
    height_o: int
    tile_o: int
    overlap_o: int
    n_cols: int
    n_rows: int
    chunk_size: int

    @classmethod
    def of(cls, grid: TileGrid, tiling: Tiling) -> Layout:
        """The output-grid geometry of ``grid`` (tiles at the analysis resolution) under ``tiling``."""
        width_o, height_o = tiling.output_size(grid.width_t, grid.height_t)
        return cls(width_o, height_o, tiling.tile_o, tiling.overlap_o, grid.n_cols, grid.n_rows,
                   tiling.chunk_size)

    @classmethod
    def covering(cls, width_o: int, height_o: int, tile_o: int, overlap_o: int,
                 chunk_size: int = 1024) -> Layout:
        """The smallest grid of ``tile_o`` tiles at ``tile_o - overlap_o`` step covering the image."""
        return cls(width_o, height_o, tile_o, overlap_o, grid_extent(width_o, tile_o, overlap_o),
                   grid_extent(height_o, tile_o, overlap_o), chunk_size)

    @property
    def step_o(self) -> int:
        """Output pixels between the origins of neighbouring tiles."""
        return self.tile_o - self.overlap_o

    @property
    def n_tiles(self) -> int:
        return self.n_cols * self.n_rows

    @property
    def n_chunk_cols(self) -> int:
        return math.ceil(self.width_o / self.chunk_size)

    @property
    def n_chunk_rows(self) -> int:
        return math.ceil(self.height_o / self.chunk_size)

    def tile_index(self, row: int, col: int) -> int:
        """Row-major position of tile ``(row, col)`` in the full (unfiltered) grid."""
        return row * self.n_cols + col

    def chunk_box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` of chunk ``(i, j)`` in output pixels, clipped to the image."""
        c = self.chunk_size
        return i * c, min((i + 1) * c, self.height_o), j * c, min((j + 1) * c, self.width_o)

    def _last_tile(self, chunk_idx: int, n_tiles: int) -> int:
        return min(n_tiles - 1, math.ceil((chunk_idx + 1) * self.chunk_size / self.step_o) - 1)

    def last_tile_row(self, i: int) -> int:
        """The last tile row that touches chunk row ``i``."""
        return self._last_tile(i, self.n_rows)

    def last_tile_col(self, j: int) -> int:
        """The last tile column that touches chunk column ``j``."""
        return self._last_tile(j, self.n_cols)

    def chunk_range(self, start_o: int, size: int) -> range:
        """Chunk indices (along one axis) touched by the pixel range ``[start_o, start_o + size)``."""
        return range(start_o // self.chunk_size, (start_o + size - 1) // self.chunk_size + 1)
