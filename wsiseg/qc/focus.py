"""Out-of-focus tissue, measured on the tiles a run reads anyway (at the analysis resolution).

The focus measure of a block is the *re-blur ratio* (at three scales, :func:`focus_ratios`): the Laplacian
energy of the block after one more slight blur (a 3 x 3 binomial filter, sigma ~0.7 px) over its Laplacian
energy as it is. A sharp block loses most of its finest detail to the extra blur (ratio ~0.15-0.35 on H&E
at 0.5 um/px); a block that is already blurred by sigma pixels has little left to lose (sigma 1: ~0.55,
1.5: ~0.72, 2: ~0.8, 4: ~0.94). Being a ratio of the block's own energies it does not depend on contrast
or stain intensity, and it reads blur in pixels of the analysis resolution, which is the blur the model
sees, so one threshold (``blur.max_ratio``, default 0.6: ~1.2 px of blur) holds at every resolution.
Blocks with too little tissue (``blur.min_tissue``) or no texture at all are not judged.

Blocks form one grid over the analysis-resolution image, ``block`` pixels square, ``block`` dividing the
tile step; each block is measured by exactly one tile (the one whose step-sized top-left part holds it;
the last column and row of tiles hold the rest of their tiles), so overlapping tiles never disagree.
:class:`FocusGrid` collects the blurred blocks (thread-safe: reader threads record into it) and maps them
onto any pixel grid of the slide."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from wsiseg.qc.settings import BlurSettings

#: Scales (pixels averaged, each twice the last) at which the re-blur ratio is measured; blocks are a
#: multiple of the largest.
SCALES = (1, 2, 4)
#: Blocks whose re-blur ratio at the second scale is below this are sharp at the finest scale too.
SHARP_AT_SCALE_2 = 0.2
#: A coarser scale is used only while a block still spans this many of its pixels; blocks are at least twice
#: this (when the tile step allows).
MIN_SCALED_BLOCK = 16
#: A pixel is tissue for the blur check when its green channel is below this (H&E both absorb green).
TISSUE_BELOW = 215
#: Blocks whose mean squared Laplacian (8-bit units) is below this are flat (glass, saturated): not judged.
MIN_ENERGY = 0.01


def block_size(step: int, mpp: float, block_um: float, multiple: int = 1) -> int:
    """The block side in analysis pixels: the multiple of ``multiple`` and of the largest of :data:`SCALES`
    that divides ``step``, closest to ``block_um`` microns but at least ``2 * MIN_SCALED_BLOCK`` pixels
    (``step`` itself when none does)."""
    target = max(block_um / mpp, 2 * MIN_SCALED_BLOCK)
    unit = math.lcm(multiple, SCALES[-1])
    candidates = [b for b in range(unit, step + 1, unit) if step % b == 0]
    return int(min(candidates, key=lambda b: (abs(math.log(b / target)), b))) if candidates else step


def _laplacian(plane: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian of float32 planes ``(..., h, w)`` (0 on the one-pixel border)."""
    out = np.zeros_like(plane)
    lap = out[..., 1:-1, 1:-1]
    np.multiply(plane[..., 1:-1, 1:-1], np.float32(4), out=lap)
    lap -= plane[..., :-2, 1:-1]
    lap -= plane[..., 2:, 1:-1]
    lap -= plane[..., 1:-1, :-2]
    lap -= plane[..., 1:-1, 2:]
    return out


def _binomial(plane: np.ndarray) -> np.ndarray:
    """3 x 3 binomial blur of planes ``(..., h, w)`` ([1, 2, 1] / 4 along each axis; edges kept)."""
    rows = plane.copy()
    inner = rows[..., 1:-1, :]
    np.multiply(plane[..., 1:-1, :], np.float32(2), out=inner)
    inner += plane[..., :-2, :]
    inner += plane[..., 2:, :]
    inner *= np.float32(0.25)
    out = rows.copy()
    inner = out[..., 1:-1]
    np.multiply(rows[..., 1:-1], np.float32(2), out=inner)
    inner += rows[..., :-2]
    inner += rows[..., 2:]
    inner *= np.float32(0.25)
    return out


def _halve(plane: np.ndarray) -> np.ndarray:
    """Mean of each 2 x 2 pixel square of planes ``(..., h, w)`` (even ``h``, ``w``)."""
    out = plane[..., 0::2, 0::2] + plane[..., 1::2, 0::2]
    out += plane[..., 0::2, 1::2]
    out += plane[..., 1::2, 1::2]
    out *= np.float32(0.25)
    return np.asarray(out)


def _block_energies(values: np.ndarray, block: int, ny: int, nx: int) -> np.ndarray:
    """Sum of squares of each ``block``-pixel block of the top-left ``ny x nx`` blocks of ``values``
    ``(h, w)`` (one pass: no squared copy)."""
    blocks = values[:ny * block, :nx * block].reshape(ny, block, nx, block)
    return np.asarray(np.einsum("iajb,iajb->ij", blocks, blocks))


def _ratio(plane: np.ndarray, size: int, ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-blur ratio and mean squared Laplacian of the ``ny x nx`` blocks of ``size`` px of ``plane``.

    Both filters are linear, so the Laplacian of the re-blurred plane is the re-blurred Laplacian (up to the
    plane's one-pixel border): one Laplacian serves both energies."""
    lap = _laplacian(plane)
    e0 = _block_energies(lap, size, ny, nx)
    e1 = _block_energies(_binomial(lap), size, ny, nx)
    return e1 / np.maximum(e0, np.float32(1e-6)), e0 / np.float32(size * size)


def _finest_ratios(plane: np.ndarray, block: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Re-blur ratio at the finest scale (float32 ``(k,)``) of the blocks ``(rows[i], cols[i])`` of the green
    ``plane`` ``(h, w)`` (uint8), each measured with the 2 px its filters reach into (within the plane), as in
    a whole-plane pass. Blocks whose reach the plane clips alike are measured together, as one stack."""
    h, w = plane.shape
    y0s, x0s = rows * block, cols * block
    reach = np.stack([np.minimum(y0s, 2), np.minimum(x0s, 2),
                      np.minimum(h - y0s - block, 2), np.minimum(w - x0s - block, 2)], axis=1)
    out = np.empty(len(rows), np.float32)
    for top, left, bottom, right in np.unique(reach, axis=0):
        same = np.nonzero((reach == (top, left, bottom, right)).all(axis=1))[0]
        pieces = np.stack([plane[y - top:y + block + bottom, x - left:x + block + right]
                           for y, x in zip(y0s[same], x0s[same], strict=True)]).astype(np.float32)
        inner = (slice(None), slice(top, top + block), slice(left, left + block))
        lap = _laplacian(pieces)
        e0 = np.square(lap[inner], dtype=np.float64).sum(axis=(1, 2))
        e1 = np.square(_binomial(lap)[inner], dtype=np.float64).sum(axis=(1, 2))
        out[same] = e1 / np.maximum(e0, 1e-6)
    return out


def focus_ratios(tile: np.ndarray, block: int, ny: int, nx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block of the top-left ``ny x nx`` blocks of an RGB uint8 ``tile`` ``(h, w, 3)``: ``(ratio,
    tissue share, mean squared Laplacian at the second scale)``, each float32 ``(ny, nx)`` (see the module
    docstring).

    The ratio is the largest over :data:`SCALES` (the green plane averaged over 1, 2 and 4 pixels): a block
    blurred by several pixels has almost no detail left at the finest scale but 8-bit rounding noise, which
    reads as sharp there; one or two scales up its blur shows (every scale's threshold means "at least that
    much blur", so the largest ratio is the answer). The finest scale costs most, so it is measured only on
    blocks that the second scale does not already show sharp (ratio < :data:`SHARP_AT_SCALE_2`: less than
    ~0.9 px of blur at the finest scale, whose ratio then stays below ~0.5): most tissue is sharp."""
    # green, where H&E absorb most; one contiguous copy (0.3 ms for 1024 px) makes every later pass over it
    # several times faster than strided reads of the interleaved RGB
    plane = np.ascontiguousarray(tile[:ny * block, :nx * block, 1])
    # tissue pixels per block: down the rows of each block row first (long contiguous runs), then across
    below = (plane < TISSUE_BELOW).view(np.uint8).reshape(ny, block, nx * block)
    columns = below.sum(axis=1, dtype=np.int32).reshape(ny, nx, block)
    tissue = columns.sum(axis=2) / np.float32(block * block)
    ratio = np.zeros((ny, nx), np.float32)
    energy = np.zeros((ny, nx), np.float32)
    green = np.empty(0, np.float32)
    for scale in SCALES[1:]:
        size = block // scale
        if size < MIN_SCALED_BLOCK:  # too few pixels for a ratio (and the blur reaches across)
            break
        if scale == SCALES[1]:  # the 2 x 2 means straight from the bytes (no full-size float copy)
            pairs = plane[0::2].astype(np.uint16) + plane[1::2]
            green = ((pairs[:, 0::2] + pairs[:, 1::2]) * np.float32(0.25)).astype(np.float32)
        else:
            green = _halve(green)
        r, e = _ratio(green, size, ny, nx)
        np.maximum(ratio, r, out=ratio)
        if scale == SCALES[1]:
            energy = e.astype(np.float32)
    if block // SCALES[1] < MIN_SCALED_BLOCK:  # small blocks: the finest scale everywhere
        r, e = _ratio(plane.astype(np.float32), block, ny, nx)
        return np.maximum(ratio, r).astype(np.float32), tissue.astype(np.float32), e.astype(np.float32)
    unsure = np.nonzero(ratio >= SHARP_AT_SCALE_2)
    if len(unsure[0]):
        ratio[unsure] = np.maximum(ratio[unsure], _finest_ratios(plane, block, *unsure))
    return ratio, tissue.astype(np.float32), energy


@dataclass
class FocusGrid:
    """The blurred blocks of one run: a grid of ``block``-pixel blocks over the analysis-resolution image,
    measured tile by tile.

    ``step``/``tile_size``/``n_cols``/``n_rows``: the tile grid (tiles start at ``col * step``). Memory: one
    byte per block (a 100 000 px square slide at 0.5 um/px with 128 px blocks: 0.6 MB).
    """

    block: int
    step: int
    tile_size: int
    n_cols: int
    n_rows: int
    settings: BlurSettings
    n_measured: int = 0
    _flags: np.ndarray = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.step % self.block:
            raise ValueError(f"the focus block ({self.block} px) must divide the tile step ({self.step} px)")
        extent_x = (self.n_cols - 1) * self.step + self.tile_size
        extent_y = (self.n_rows - 1) * self.step + self.tile_size
        self._flags = np.zeros((extent_y // self.block, extent_x // self.block), bool)

    def _span(self, index: int, last: int) -> int:
        """Pixels of the tile at ``index`` (column or row) whose blocks it measures."""
        return self.tile_size if index == last else self.step

    def measure(self, col: int, row: int, tile: np.ndarray) -> None:
        """Measure the blocks tile ``(col, row)`` owns (``tile``: its RGB uint8 pixels)."""
        nx = self._span(col, self.n_cols - 1) // self.block
        ny = self._span(row, self.n_rows - 1) // self.block
        if nx == 0 or ny == 0:
            return
        ratio, tissue, energy = focus_ratios(tile, self.block, ny, nx)
        judged = (tissue >= self.settings.min_tissue) & (energy >= MIN_ENERGY)
        bx0, by0 = col * self.step // self.block, row * self.step // self.block
        with self._lock:
            self.n_measured += int(judged.sum())
            self._flags[by0:by0 + ny, bx0:bx0 + nx] = judged & (ratio > self.settings.max_ratio)

    @property
    def blurred(self) -> list[list[int]]:
        """The blurred blocks as ``[bx, by]`` pairs, row by row (what a journal stores)."""
        with self._lock:
            ys, xs = np.nonzero(self._flags)
        return [[int(x), int(y)] for y, x in zip(ys, xs, strict=True)]

    @property
    def n_blurred(self) -> int:
        with self._lock:
            return int(self._flags.sum())

    def restore(self, blocks: list[list[int]]) -> None:
        """Mark blocks recorded earlier (a resumed run: :attr:`blurred` as the journal stored it)."""
        with self._lock:
            for bx, by in blocks:
                self._flags[int(by), int(bx)] = True

    def mask(self, y0: int, y1: int, x0: int, x1: int, stride: float) -> np.ndarray:
        """Bool ``(y1 - y0, x1 - x0)``: which pixels of a grid of ``stride`` analysis pixels per pixel (the
        output grid, a thumbnail) have their centre in a blurred block, for its rows ``y0:y1`` and columns
        ``x0:x1`` (pixels beyond the measured grid: not blurred)."""
        rows = np.floor((np.arange(y0, y1) + 0.5) * stride / self.block).astype(np.int64)
        cols = np.floor((np.arange(x0, x1) + 0.5) * stride / self.block).astype(np.int64)
        h, w = self._flags.shape
        if h == 0 or w == 0:
            return np.zeros((y1 - y0, x1 - x0), bool)
        with self._lock:
            out = self._flags.take(np.minimum(rows, h - 1), axis=0).take(np.minimum(cols, w - 1), axis=1)
        out[rows >= h] = False
        out[:, cols >= w] = False
        return np.asarray(out)
