"""Stitching overlapping tile predictions into output chunks (one module per concern):

- :mod:`.layout`: the tile and chunk geometry on the output grid;
- :mod:`.accumulator`: one chunk's running sums, blending and normalising;
- :mod:`.pool`: reused accumulator buffers;
- :mod:`.spill`: accumulators on disk (over the memory budget, and as resume state);
- :mod:`.stitcher`: :class:`Stitcher`, which feeds tiles in grid order and hands out finished chunks.
"""

from wsiseg.infer.stitch.layout import Layout
from wsiseg.infer.stitch.stitcher import DEFAULT_RAM_BUDGET, FinishedChunk, Stitcher

__all__ = ["DEFAULT_RAM_BUDGET", "FinishedChunk", "Layout", "Stitcher"]
