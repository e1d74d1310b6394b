"""One output chunk's accumulator: the running sums ``sum(w * p)`` per class and ``sum(w)``, and the
rectangles tiles touched (only those are ever saved for resuming).

Blending a tile's part into a chunk (:func:`blend`) and turning a finished accumulator into probabilities
(:func:`normalise`) are the only arithmetic of stitching; both work in place in float32, in an order that
never depends on scheduling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Touched rectangles kept per accumulator before they are merged into their bounding box.
MAX_RECTS = 4

#: A saved layer: the file holding some rectangles of an accumulator, and those rectangles.
Layer = tuple[str, list[list[int]]]


def add_rect(rects: list[list[int]], y0: int, y1: int, x0: int, x1: int) -> list[list[int]]:
    """``rects`` plus ``[y0, y1, x0, x1]``: contained rectangles dropped, at most :data:`MAX_RECTS` (else
    the bounding box)."""
    for r in rects:
        if r[0] <= y0 and y1 <= r[1] and r[2] <= x0 and x1 <= r[3]:
            return rects
    rects = [r for r in rects if not (y0 <= r[0] and r[1] <= y1 and x0 <= r[2] and r[3] <= x1)]
    rects.append([y0, y1, x0, x1])
    if len(rects) > MAX_RECTS:  # fall back to the bounding box
        rects = [[min(r[0] for r in rects), max(r[1] for r in rects),
                  min(r[2] for r in rects), max(r[3] for r in rects)]]
    return rects


@dataclass
class Accumulator:
    """A chunk's sums ``data`` (``(k + 1, h, w)`` float32: ``k`` planes of ``sum(w * p)``, then ``sum(w)``).

    Its saved state is ``layers``: files of its values in some rectangles, applied in order (later ones
    overwrite). ``rects`` are all rectangles tiles touched (chunk-local pixels), ``dirty`` those touched
    since the last save, so each tile's area is written about once however often the run saves.
    """

    data: np.ndarray
    rects: list[list[int]] = field(default_factory=list)
    dirty: list[list[int]] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)

    def touch(self, y0: int, y1: int, x0: int, x1: int) -> None:
        """Record a touched rectangle (chunk-local output pixels)."""
        self.rects = add_rect(self.rects, y0, y1, x0, x1)
        self.dirty = add_rect(self.dirty, y0, y1, x0, x1)

    def restore(self, layers: list[Layer]) -> None:
        """Take ``layers`` (already read into :attr:`data`) as the saved state and their rectangles as
        touched."""
        for _, rects in layers:
            for r in rects:
                self.rects = add_rect(self.rects, *r)
        self.layers = layers


def blend(data: np.ndarray, probs: np.ndarray, window: np.ndarray, scratch: np.ndarray,
          tile_box: tuple[int, int, int, int], at: tuple[int, int], fresh: bool) -> None:
    """Add ``w * p`` of tile pixels ``tile_box = (y0, y1, x0, x1)`` to accumulator ``data`` at chunk pixel
    ``at = (cy, cx)``. ``fresh``: no earlier tile reached these pixels, so the sums there are 0 and are
    simply set (``0 + x == x``, bit for bit, one pass instead of two). ``probs`` is ``(k, T, T)``,
    ``window`` ``(T, T)``, ``scratch`` a float32 ``(k, T, T)`` buffer."""
    ty0, ty1, tx0, tx1 = tile_box
    cy, cx = at
    k, h, w_ = probs.shape[0], ty1 - ty0, tx1 - tx0
    w = window[ty0:ty1, tx0:tx1]
    p = probs[:, ty0:ty1, tx0:tx1]
    region = data[:k, cy:cy + h, cx:cx + w_]
    if fresh:
        np.multiply(p, w, out=region)
        data[k, cy:cy + h, cx:cx + w_] = w
    else:
        tmp = scratch[:, :h, :w_]
        np.multiply(p, w, out=tmp)
        region += tmp
        data[k, cy:cy + h, cx:cx + w_] += w


def normalise(data: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """The probabilities ``sum(w * p) / sum(w)`` of a finished accumulator ``(k + 1, h, w)``, in place: a
    ``(k, h, w)`` view of ``data``. ``inv`` is a float32 ``(h, w)`` scratch plane."""
    k = data.shape[0] - 1
    # covered pixels have weight >= MIN_WEIGHT**2, so this is 1 / weight there; uncovered ones hold
    # probability sums of exactly 0, which stay 0
    np.maximum(data[k], np.float32(1e-30), out=inv)
    np.divide(np.float32(1.0), inv, out=inv)
    probs = data[:k]
    probs *= inv
    return probs
