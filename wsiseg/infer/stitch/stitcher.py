"""Seamless stitching of overlapping tile predictions into output chunks, with bounded memory.

Tiles arrive in row-major grid order (skipped tiles are simply absent). Each output chunk (a ``chunk_size``
square of output pixels, the zarr chunk of pyramid level 0) has an :class:`~.accumulator.Accumulator`. A
chunk is *finished* as soon as the grid cursor has passed the last tile that can touch it; it is then
normalised and handed to the writer. Accumulators of chunks that get their next contribution only from the
next tile row stay in memory up to ``ram_budget`` bytes; beyond it they are spilled to the
:class:`~.spill.SpillStore` (those needed last first), so memory is bounded by the budget plus the chunks
the current tile touches, whatever the slide size. The same files (and the cursor) are the resume state:
:meth:`Stitcher.save_state` returns a JSON-able dict that, stored atomically by the caller after the
finished chunks are written, lets a new :class:`Stitcher` continue bit-for-bit where the old one stopped.

Cost per tile: the part of a tile no earlier tile reaches is stored as ``w * p`` in one pass; only overlap
strips are added. Buffers of finished chunks come back through :meth:`Stitcher.release` and are reused
(:class:`~.pool.BufferPool`), so no fresh pages are faulted in per chunk.

Order independence: stitching always accumulates in row-major grid order whatever order reads complete
in, so the floating-point sums, and therefore the output bytes, never depend on scheduling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.errors import OutputError, option
from wsiseg.infer.stitch.accumulator import Accumulator, Layer, blend, normalise
from wsiseg.infer.stitch.layout import Layout
from wsiseg.infer.stitch.pool import BufferPool
from wsiseg.infer.stitch.spill import SpillStore, layers_of

#: Default bytes of waiting accumulators kept in memory (a chunk row of a 10k x 10k slide at 2 um/px: 72 MB).
DEFAULT_RAM_BUDGET = 96 << 20
#: Version of the :meth:`Stitcher.save_state` dict (2: accumulators saved as layers).
STATE_FORMAT = 2


@dataclass
class FinishedChunk:
    """A chunk no tile can touch any more.

    :meth:`get` gives its float32 ``(k, h, w)`` blended probabilities (0 where no tile covered a pixel:
    "not analysed"), or ``None`` when no tile touched the chunk at all (:attr:`empty`). A chunk whose
    accumulator was spilled to disk is read back only when :meth:`get` is first called (thread-safe, e.g.
    in a writer thread), so finishing many spilled chunks at once (a slide's last rows) costs no memory
    until each is written.
    """

    i: int
    j: int
    box: tuple[int, int, int, int]
    probs: np.ndarray | None
    loader: Callable[[], np.ndarray] | None = None

    @property
    def empty(self) -> bool:
        return self.probs is None and self.loader is None

    def get(self) -> np.ndarray | None:
        if self.probs is None and self.loader is not None:
            self.probs, self.loader = self.loader(), None
        return self.probs


class Stitcher:
    """Blend tile probabilities (fed in row-major grid order) into finished chunks.

    Args:
        layout: tile and chunk geometry on the output grid.
        n_classes: ``k``, the number of probability channels per tile.
        window: ``(tile_o, tile_o)`` float32 weights from :func:`wsiseg.infer.blending.blend_window`.
        work_dir: where spilled and saved accumulators go (created if missing).
        state: a dict from :meth:`save_state` of an earlier run to continue from.
        ram_budget: bytes of accumulators waiting for the next tile row kept in memory; the rest are
            spilled to ``work_dir`` and read back when needed (the output is the same either way).
    """

    def __init__(self, layout: Layout, n_classes: int, window: np.ndarray, work_dir: Path,
                 state: dict[str, Any] | None = None, ram_budget: int = DEFAULT_RAM_BUDGET) -> None:
        if window.shape != (layout.tile_o, layout.tile_o):
            raise ValueError(f"window shape {window.shape} does not match the tile size {layout.tile_o}")
        self.layout = layout
        self.n_classes = n_classes
        self.ram_budget = max(0, int(ram_budget))
        self._window = window.astype(np.float32, copy=False)
        self._scratch = np.empty((n_classes, layout.tile_o, layout.tile_o), np.float32)
        self._inv = np.empty(0, np.float32)
        self._pool = BufferPool()
        self._ram: dict[tuple[int, int], Accumulator] = {}
        self._spilled: dict[tuple[int, int], list[Layer]] = {}
        self.cursor = 0
        # chunk rows/cols whose last contributing tile row/col is r/c
        self._rows_done: dict[int, list[int]] = {}
        for i in range(layout.n_chunk_rows):
            self._rows_done.setdefault(layout.last_tile_row(i), []).append(i)
        self._cols_done: dict[int, list[int]] = {}
        for j in range(layout.n_chunk_cols):
            self._cols_done.setdefault(layout.last_tile_col(j), []).append(j)
        self._store = SpillStore(work_dir)
        if state is not None:
            self._restore(state, Path(work_dir))

    def _restore(self, state: dict[str, Any], where: Path) -> None:
        if state.get("format") != STATE_FORMAT:
            raise OutputError(f"the resume state in {where} was written by another wsiseg version; "
                              f"pass {option('overwrite', flag=True)} to start again")
        try:
            self.cursor = int(state["cursor"])
            self._store.gen = int(state["gen"])
            accs = state["accs"]
        except (KeyError, TypeError, ValueError) as exc:
            raise OutputError(f"the resume state in {where} is damaged ({exc!r}); "
                              f"pass {option('overwrite', flag=True)} to start again") from exc
        self._spilled = layers_of(accs, where)

    # -- feeding -------------------------------------------------------------------------------------

    def add(self, row: int, col: int, probs: np.ndarray) -> list[FinishedChunk]:
        """Blend one tile's probabilities ``(k, tile_o, tile_o)`` and return the chunks it finished.

        Tiles must come in strictly increasing row-major order; tiles never added count as skipped.
        """
        t = self.layout.tile_index(row, col)
        if t < self.cursor:
            raise ValueError(f"tile ({row}, {col}) comes after the cursor {self.cursor}: not row-major order")
        if probs.shape != (self.n_classes, self.layout.tile_o, self.layout.tile_o):
            raise ValueError(f"probabilities of shape {probs.shape}, expected "
                             f"({self.n_classes}, {self.layout.tile_o}, {self.layout.tile_o})")
        finished = self.advance(t)
        self._accumulate(row, col, probs)
        finished.extend(self._pass(t))
        self.cursor = t + 1
        return finished

    def advance(self, t: int) -> list[FinishedChunk]:
        """Treat every tile before grid index ``t`` not yet added as skipped; return finished chunks."""
        finished: list[FinishedChunk] = []
        while self.cursor < min(t, self.layout.n_tiles):
            finished.extend(self._pass(self.cursor))
            self.cursor += 1
        return finished

    def finish(self) -> list[FinishedChunk]:
        """Skip all remaining tiles and return the last finished chunks."""
        return self.advance(self.layout.n_tiles)

    @property
    def done(self) -> bool:
        return self.cursor >= self.layout.n_tiles

    def release(self, chunk: FinishedChunk) -> None:
        """Give a finished chunk's buffer back for reuse once its ``probs`` are no longer needed.

        Optional (and thread-safe): without it every chunk gets fresh memory, which costs page faults.
        """
        if chunk.probs is None or chunk.probs.base is None:
            return
        data = chunk.probs.base
        chunk.probs = None
        if isinstance(data, np.ndarray):
            self._pool.recycle(data)

    # -- persistence ---------------------------------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        """Write dirty accumulators to the work dir; return the JSON-able state naming the files.

        The caller stores the dict atomically (after writing the finished chunks) and then calls
        :meth:`collect_garbage`.
        """
        accs: dict[str, list[Any]] = {}
        for (i, j), layers in self._spilled.items():
            accs[f"{i},{j}"] = [[fname, rects] for fname, rects in layers]
        for (i, j), acc in self._ram.items():
            self._store.save(i, j, acc)
            accs[f"{i},{j}"] = [[fname, rects] for fname, rects in acc.layers]
        return {"format": STATE_FORMAT, "cursor": self.cursor, "gen": self._store.gen, "accs": accs}

    @staticmethod
    def referenced_files(state: dict[str, Any] | None) -> set[str]:
        if state is None:
            return set()
        return {str(layer[0]) for layers in state["accs"].values() for layer in layers}

    def collect_garbage(self, state: dict[str, Any]) -> None:
        """Delete accumulator files older than ``state`` (the committed one) that it does not reference.

        Files written after ``state`` was saved (a later generation) are kept: they belong to the next one.
        """
        self._store.collect_garbage(self.referenced_files(state), int(state["gen"]))

    def live_bytes(self) -> int:
        """Bytes of accumulators held in memory: at most ``ram_budget`` plus the chunks one tile touches."""
        return sum(acc.data.nbytes for acc in self._ram.values())

    # -- internals -----------------------------------------------------------------------------------

    def _new(self, i: int, j: int) -> Accumulator:
        y0, y1, x0, x1 = self.layout.chunk_box(i, j)
        return Accumulator(self._pool.zeros((self.n_classes + 1, y1 - y0, x1 - x0)))

    def _get(self, i: int, j: int) -> Accumulator:
        acc = self._ram.get((i, j))
        if acc is not None:
            return acc
        acc = self._new(i, j)
        if (i, j) in self._spilled:
            layers = self._spilled.pop((i, j))
            self._store.read(acc.data, layers)
            acc.restore(layers)
        self._ram[(i, j)] = acc
        return acc

    def _accumulate(self, row: int, col: int, probs: np.ndarray) -> None:
        lay = self.layout
        ty, tx = row * lay.step_o, col * lay.step_o
        h_valid = min(lay.tile_o, lay.height_o - ty)
        w_valid = min(lay.tile_o, lay.width_o - tx)
        fy0 = ty + lay.overlap_o if row > 0 else ty
        fx0 = tx + lay.overlap_o if col > 0 else tx
        for i in lay.chunk_range(ty, h_valid):
            cy0, cy1, _, _ = lay.chunk_box(i, 0)
            ys, ye = max(ty, cy0), min(ty + h_valid, cy1)
            for j in lay.chunk_range(tx, w_valid):
                _, _, cx0, cx1 = lay.chunk_box(i, j)
                xs, xe = max(tx, cx0), min(tx + w_valid, cx1)
                acc = self._get(i, j)
                # No earlier tile (row-major) reaches below fy0 or right of fx0 within this tile, so the
                # accumulator is still 0 there: store w * p directly.
                fy, fx = min(max(fy0, ys), ye), min(max(fx0, xs), xe)
                for y0, y1, x0, x1, fresh in ((ys, fy, xs, xe, False), (fy, ye, xs, fx, False),
                                              (fy, ye, fx, xe, True)):
                    if y0 < y1 and x0 < x1:
                        blend(acc.data, probs, self._window, self._scratch,
                              (y0 - ty, y1 - ty, x0 - tx, x1 - tx), (y0 - cy0, x0 - cx0), fresh)
                acc.touch(ys - cy0, ye - cy0, xs - cx0, xe - cx0)

    def _pass(self, t: int) -> list[FinishedChunk]:
        """The cursor passes tile ``t``: finish the chunks it was last for, spill those waiting a row."""
        r, c = divmod(t, self.layout.n_cols)
        out: list[FinishedChunk] = []
        for i in self._rows_done.get(r, ()):
            for j in self._cols_done.get(c, ()):
                out.append(self._finalise(i, j))
        waiting = [key for key in self._ram if self.layout.last_tile_col(key[1]) <= c]
        used = self.live_bytes()
        # over budget: spill the waiting chunks the next tile row reaches last (rightmost) first
        for (i, j) in sorted(waiting, key=lambda key: key[1], reverse=True):
            if used <= self.ram_budget:
                break
            acc = self._ram.pop((i, j))
            used -= acc.data.nbytes
            self._store.save(i, j, acc)
            self._spilled[(i, j)] = acc.layers
            self._pool.recycle(acc.data)
        return out

    def _finalise(self, i: int, j: int) -> FinishedChunk:
        box = self.layout.chunk_box(i, j)
        if (i, j) in self._spilled:  # read back (and normalised) by whoever writes it, when it does
            layers = self._spilled.pop((i, j))

            def load() -> np.ndarray:
                acc = self._new(i, j)
                self._store.read(acc.data, layers, own_buffer=True)
                return normalise(acc.data, np.empty(acc.data.shape[1:], np.float32))

            return FinishedChunk(i, j, box, None, load)
        if (i, j) not in self._ram:
            return FinishedChunk(i, j, box, None)
        acc = self._ram.pop((i, j))
        n = acc.data[0].size
        if self._inv.size < n:
            self._inv = np.empty(n, np.float32)
        return FinishedChunk(i, j, box, normalise(acc.data, self._inv[:n].reshape(acc.data.shape[1:])))
