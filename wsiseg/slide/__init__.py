"""Slide side of the pipeline (no torch, no zarr): open slides, read regions at a resolution in microns per
pixel, detect tissue, lay out tile grids. (Synthetic test slides: :mod:`wsiseg.synthetic`.)

Frames: ``x0, y0`` are level-0 pixels, ``x_t, y_t, width_t`` pixels at the target resolution ``mpp``.
"""

from wsiseg.slide.grid import Tile, TileGrid, make_tile_grid
from wsiseg.slide.reader import Slide, open_slide
from wsiseg.slide.tissue import TissueMask, detect_tissue, tissue_mask_from_image

__all__ = [
    "Slide",
    "Tile",
    "TileGrid",
    "TissueMask",
    "detect_tissue",
    "make_tile_grid",
    "open_slide",
    "tissue_mask_from_image",
]
