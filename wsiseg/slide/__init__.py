"""Slide side of the pipeline (no torch): open slides, read regions at a resolution in microns per pixel,
detect tissue, lay out tile grids, and write synthetic slides with exact ground truth.

Frames: ``x0, y0`` are level-0 pixels, ``x_t, y_t, width_t`` pixels at the target resolution ``mpp``.
"""

from wsiseg.slide.grid import Tile, TileGrid, make_tile_grid
from wsiseg.slide.reader import Slide, open_slide
from wsiseg.slide.synthetic import SYNTHETIC_CLASSES, SlideLayout, SyntheticTruth, write_synthetic_slide
from wsiseg.slide.tissue import TissueMask, detect_tissue, tissue_mask_from_image

__all__ = [
    "SYNTHETIC_CLASSES",
    "Slide",
    "SlideLayout",
    "SyntheticTruth",
    "Tile",
    "TileGrid",
    "TissueMask",
    "detect_tissue",
    "make_tile_grid",
    "open_slide",
    "tissue_mask_from_image",
    "write_synthetic_slide",
]
