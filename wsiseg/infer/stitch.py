"""Seamless stitching of overlapping tile predictions into output chunks, with bounded memory.

Tiles arrive in row-major grid order (skipped tiles are simply absent). Each output chunk (a
``chunk_size`` square of target pixels, the zarr chunk of pyramid level 0) keeps a float32 accumulator
``(k + 1, h, w)``: the sum of ``w * p`` per class and the sum of ``w``. A chunk is *finished* as soon as
the grid cursor has passed the last tile that can touch it; it is then normalised and handed to the
writer. Accumulators of chunks that will get their next contribution only from the next tile row stay in
memory up to ``ram_budget`` bytes; beyond it they are spilled to small raw float32 files in a work
directory (those needed last first), so memory is bounded by the budget plus the chunks the current tile
touches, whatever the slide size. The same files (and the cursor) are the resume state:
:meth:`Stitcher.save_state` returns a JSON-able dict that, stored atomically by the caller after the
finished chunks are written, lets a new :class:`Stitcher` continue bit-for-bit where the old one stopped.
A chunk's saved state is a list of layers (files of the rectangles touched since the previous save), so
each tile's area is written about once however often the caller saves.

Cost per tile: the part of a tile no earlier tile reaches is stored as ``w * p`` in one pass; only overlap
strips are added. Accumulator buffers of finished chunks come back through :meth:`Stitcher.release` and are
reused, so no fresh pages are faulted in per chunk.

Order independence: stitching always accumulates in row-major grid order whatever order reads complete
in, so the floating-point sums, and therefore the output bytes, never depend on scheduling.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.errors import ConfigError, OutputError


@dataclass(frozen=True)
class Layout:
    """Geometry of the tile grid and of the output chunk grid, all in target-resolution pixels.

    Tile ``(row, col)`` covers ``[row * stride, row * stride + tile_size)`` vertically (same for x), with
    ``stride = tile_size - overlap``; chunk ``(i, j)`` covers ``[i * chunk_size, (i + 1) * chunk_size)``
    clipped to the image. The tile grid must cover the image.
    """

    width_t: int
    height_t: int
    tile_size: int
    overlap: int
    n_cols: int
    n_rows: int
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        if self.width_t <= 0 or self.height_t <= 0:
            raise ConfigError(f"empty image {self.width_t}x{self.height_t}")
        if not 0 <= self.overlap <= self.tile_size // 2:
            raise ConfigError(
                f"overlap must be between 0 and half the tile size ({self.tile_size // 2}), "
                f"got {self.overlap}"
            )
        if self.chunk_size <= 0 or self.chunk_size & (self.chunk_size - 1):
            raise ConfigError(f"chunk size must be a power of two, got {self.chunk_size}")
        if (self.n_cols - 1) * self.stride + self.tile_size < self.width_t or (
            (self.n_rows - 1) * self.stride + self.tile_size < self.height_t
        ):
            raise ConfigError("tile grid does not cover the image")

    @classmethod
    def covering(cls, width_t: int, height_t: int, tile_size: int, overlap: int,
                 chunk_size: int = 1024) -> Layout:
        """The smallest grid of ``tile_size`` tiles at ``tile_size - overlap`` stride covering the image."""
        stride = tile_size - overlap
        n_cols = max(1, math.ceil((width_t - overlap) / stride)) if stride > 0 else 1
        n_rows = max(1, math.ceil((height_t - overlap) / stride)) if stride > 0 else 1
        return cls(width_t, height_t, tile_size, overlap, n_cols, n_rows, chunk_size)

    @property
    def stride(self) -> int:
        return self.tile_size - self.overlap

    @property
    def n_tiles(self) -> int:
        return self.n_cols * self.n_rows

    @property
    def n_chunk_cols(self) -> int:
        return math.ceil(self.width_t / self.chunk_size)

    @property
    def n_chunk_rows(self) -> int:
        return math.ceil(self.height_t / self.chunk_size)

    def tile_index(self, row: int, col: int) -> int:
        """Row-major position of tile ``(row, col)`` in the full (unfiltered) grid."""
        return row * self.n_cols + col

    def chunk_box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` of chunk ``(i, j)`` in target pixels, clipped to the image."""
        c = self.chunk_size
        return i * c, min((i + 1) * c, self.height_t), j * c, min((j + 1) * c, self.width_t)

    def _last_tile(self, chunk_idx: int, n_tiles: int) -> int:
        return min(n_tiles - 1, math.ceil((chunk_idx + 1) * self.chunk_size / self.stride) - 1)

    def last_tile_row(self, i: int) -> int:
        """The last tile row that touches chunk row ``i``."""
        return self._last_tile(i, self.n_rows)

    def last_tile_col(self, j: int) -> int:
        """The last tile column that touches chunk column ``j``."""
        return self._last_tile(j, self.n_cols)

    def chunk_range(self, start_t: int, size: int) -> range:
        """Chunk indices (along one axis) touched by the pixel range ``[start_t, start_t + size)``."""
        return range(start_t // self.chunk_size, (start_t + size - 1) // self.chunk_size + 1)


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


_MAX_RECTS = 4
#: Default bytes of waiting accumulators kept in memory (a chunk row of a 10k x 10k slide at 2 um/px: 72 MB).
DEFAULT_RAM_BUDGET = 96 << 20
#: Released accumulator buffers kept for reuse (flat; any chunk shape that fits is carved out of one).
_POOL_SIZE = 2


#: Version of the :meth:`Stitcher.save_state` dict (2: accumulators saved as layers).
_STATE_FORMAT = 2
#: A chunk's saved state is a list of layers (file, rectangles); compacted into one beyond this many.
_MAX_LAYERS = 6

Layer = tuple[str, list[list[int]]]


def _add_rect(rects: list[list[int]], y0: int, y1: int, x0: int, x1: int) -> list[list[int]]:
    """``rects`` plus ``[y0, y1, x0, x1]``: contained rectangles dropped, at most ``_MAX_RECTS`` (else the
    bounding box)."""
    for r in rects:
        if r[0] <= y0 and y1 <= r[1] and r[2] <= x0 and x1 <= r[3]:
            return rects
    rects = [r for r in rects if not (y0 <= r[0] and r[1] <= y1 and x0 <= r[2] and r[3] <= x1)]
    rects.append([y0, y1, x0, x1])
    if len(rects) > _MAX_RECTS:  # fall back to the bounding box
        rects = [[min(r[0] for r in rects), max(r[1] for r in rects),
                  min(r[2] for r in rects), max(r[3] for r in rects)]]
    return rects


@dataclass
class _Acc:
    """One chunk's accumulator and how it is saved.

    The saved state is ``layers``: files of the accumulator's values in some rectangles, applied in order
    (later ones overwrite). A save writes only the rectangles touched since the previous one (``dirty``),
    so each tile's area is written about once, not the whole chunk after every batch.
    """

    data: np.ndarray  # (k + 1, h, w) float32
    rects: list[list[int]] = field(default_factory=list)  # touched [y0, y1, x0, x1] (chunk-local)
    dirty: list[list[int]] = field(default_factory=list)  # touched since the last save
    layers: list[Layer] = field(default_factory=list)

    def touch(self, y0: int, y1: int, x0: int, x1: int) -> None:
        """Record a touched rectangle; only touched areas are saved (overlap strips, not whole chunks)."""
        self.rects = _add_rect(self.rects, y0, y1, x0, x1)
        self.dirty = _add_rect(self.dirty, y0, y1, x0, x1)


class Stitcher:
    """Blend tile probabilities (fed in row-major grid order) into finished chunks.

    Args:
        layout: tile and chunk geometry.
        n_classes: ``k``, the number of probability channels per tile.
        window: ``(tile_size, tile_size)`` float32 weights from :func:`wsiseg.infer.blending.blend_window`.
        work_dir: where spilled accumulators go (created if missing).
        state: a dict from :meth:`save_state` of an earlier run to continue from.
        ram_budget: bytes of accumulators waiting for the next tile row kept in memory; the rest are
            spilled to ``work_dir`` and read back when needed (the output is the same either way).
    """

    def __init__(self, layout: Layout, n_classes: int, window: np.ndarray, work_dir: Path,
                 state: dict[str, Any] | None = None, ram_budget: int = DEFAULT_RAM_BUDGET) -> None:
        if window.shape != (layout.tile_size, layout.tile_size):
            raise ConfigError(f"window shape {window.shape} does not match tile size {layout.tile_size}")
        self.layout = layout
        self.n_classes = n_classes
        self.ram_budget = max(0, int(ram_budget))
        self._window = window.astype(np.float32, copy=False)
        self._scratch = np.empty((n_classes, layout.tile_size, layout.tile_size), np.float32)
        self._dir = Path(work_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._ram: dict[tuple[int, int], _Acc] = {}
        self._pool: list[np.ndarray] = []  # flat float32 buffers
        self._pool_lock = threading.Lock()
        self._io_buf = np.empty(0, np.float32)
        self._inv = np.empty(0, np.float32)
        self._spilled: dict[tuple[int, int], list[Layer]] = {}
        self._gen = 0
        self.cursor = 0
        # chunk rows/cols whose last contributing tile row/col is r/c
        self._rows_done: dict[int, list[int]] = {}
        for i in range(layout.n_chunk_rows):
            self._rows_done.setdefault(layout.last_tile_row(i), []).append(i)
        self._cols_done: dict[int, list[int]] = {}
        for j in range(layout.n_chunk_cols):
            self._cols_done.setdefault(layout.last_tile_col(j), []).append(j)
        if state is not None:
            if state.get("format") != _STATE_FORMAT:
                raise OutputError(f"the resume state in {self._dir} was written by another wsiseg version; "
                                  "pass --overwrite to start again")
            try:
                self.cursor = int(state["cursor"])
                self._gen = int(state["gen"])
                for key, layers in state["accs"].items():
                    i, j = (int(v) for v in key.split(","))
                    self._spilled[(i, j)] = [(str(fname), [[int(v) for v in r] for r in rects])
                                             for fname, rects in layers]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise OutputError(f"the resume state in {self._dir} is damaged ({exc!r}); "
                                  "pass --overwrite to start again") from exc

    # -- feeding -------------------------------------------------------------------------------------

    def add(self, row: int, col: int, probs: np.ndarray) -> list[FinishedChunk]:
        """Blend one tile's probabilities ``(k, tile_size, tile_size)`` and return the chunks it finished.

        Tiles must come in strictly increasing row-major order; tiles never added count as skipped.
        """
        t = self.layout.tile_index(row, col)
        if t < self.cursor:
            raise ValueError(f"tile ({row}, {col}) comes after the cursor {self.cursor}: not row-major order")
        if probs.shape != (self.n_classes, self.layout.tile_size, self.layout.tile_size):
            raise ValueError(f"probabilities of shape {probs.shape}, expected "
                             f"({self.n_classes}, {self.layout.tile_size}, {self.layout.tile_size})")
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
            self._save(i, j, acc)
            accs[f"{i},{j}"] = [[fname, rects] for fname, rects in acc.layers]
        return {"format": _STATE_FORMAT, "cursor": self.cursor, "gen": self._gen, "accs": accs}

    @staticmethod
    def referenced_files(state: dict[str, Any] | None) -> set[str]:
        if state is None:
            return set()
        return {str(layer[0]) for layers in state["accs"].values() for layer in layers}

    def collect_garbage(self, state: dict[str, Any]) -> None:
        """Delete accumulator files older than ``state`` (the committed one) that it does not reference.

        Files written after ``state`` was saved (a later generation) are kept: they belong to the next one.
        """
        keep, gen = self.referenced_files(state), int(state["gen"])
        for path in self._dir.glob("acc_*.f32"):
            try:
                file_gen = int(path.stem.rsplit("_", 1)[1])
            except (IndexError, ValueError):
                continue
            if path.name not in keep and file_gen <= gen:
                path.unlink(missing_ok=True)

    def live_chunks(self) -> int:
        """Number of accumulators held in memory."""
        return len(self._ram)

    def live_bytes(self) -> int:
        """Bytes of accumulators held in memory: at most ``ram_budget`` plus the chunks one tile touches."""
        return sum(acc.data.nbytes for acc in self._ram.values())

    # -- internals -----------------------------------------------------------------------------------

    def _save(self, i: int, j: int, acc: _Acc) -> None:
        """Make ``acc.layers`` hold the accumulator's current state (writes what changed since the last)."""
        if not acc.dirty:
            return
        if len(acc.layers) >= _MAX_LAYERS:  # compact: one file with every touched rectangle
            acc.layers = [(self._write(i, j, acc.data, acc.rects), [list(r) for r in acc.rects])]
        else:
            acc.layers.append((self._write(i, j, acc.data, acc.dirty), acc.dirty))
        acc.dirty = []

    def _write(self, i: int, j: int, data: np.ndarray, rects: list[list[int]]) -> str:
        self._gen += 1
        fname = f"acc_{i}_{j}_{self._gen}.f32"
        tmp = self._dir / (fname + ".tmp")
        with open(tmp, "wb") as fh:  # the rectangles, one after the other (shapes are in the state)
            for y0, y1, x0, x1 in rects:
                fh.write(self._contiguous(data[:, y0:y1, x0:x1]).data)  # the C-order (k + 1, h, w) block
        os.replace(tmp, self._dir / fname)
        return fname

    def _contiguous(self, block: np.ndarray) -> np.ndarray:
        """``block`` itself when C-contiguous, else a copy in a reused buffer."""
        if block.flags.c_contiguous:
            return block
        buf = self._io_view(block.shape)
        np.copyto(buf, block)
        return buf

    def _io_view(self, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 array of ``shape`` in the reused I/O buffer (grown when needed)."""
        n = int(np.prod(shape))
        if self._io_buf.size < n:
            self._io_buf = np.empty(n, np.float32)
        return self._io_buf[:n].reshape(shape)

    def _read_into(self, fh: Any, block: np.ndarray, own_buffer: bool = False) -> None:
        """Fill ``block`` (a view into an accumulator) with the next ``block.nbytes`` bytes of ``fh``
        (through the shared I/O buffer, or a private one with ``own_buffer``, for other threads)."""
        if block.flags.c_contiguous:
            target = block
        else:
            target = np.empty(block.shape, np.float32) if own_buffer else self._io_view(block.shape)
        view = target.data.cast("B")
        if fh.readinto(view) != view.nbytes:
            raise ValueError("shorter than its rectangles")
        if target is not block:
            np.copyto(block, target)

    def _new_acc(self, i: int, j: int) -> _Acc:
        y0, y1, x0, x1 = self.layout.chunk_box(i, j)
        shape = (self.n_classes + 1, y1 - y0, x1 - x0)
        n = math.prod(shape)
        with self._pool_lock:
            fits = [k for k, flat in enumerate(self._pool) if flat.size >= n]
            flat = self._pool.pop(min(fits, key=lambda k: self._pool[k].size)) if fits else None
        if flat is None:
            return _Acc(np.zeros(shape, dtype=np.float32))
        data = flat[:n].reshape(shape)
        data.fill(0)
        return _Acc(data)

    def release(self, chunk: FinishedChunk) -> None:
        """Give a finished chunk's buffer back for reuse once its ``probs`` are no longer needed.

        Optional (and thread-safe): without it every chunk gets fresh memory, which costs page faults.
        """
        if chunk.probs is None or chunk.probs.base is None:
            return
        data = chunk.probs.base
        chunk.probs = None
        if isinstance(data, np.ndarray):
            self._recycle(data)

    def _recycle(self, data: np.ndarray) -> None:
        """Keep the memory behind an accumulator (``data`` or the array it views) for a later chunk."""
        owner = data if data.base is None else data.base
        if not isinstance(owner, np.ndarray) or owner.dtype != np.float32 or not owner.flags.c_contiguous:
            return
        with self._pool_lock:
            if len(self._pool) < _POOL_SIZE and not any(np.shares_memory(owner, b) for b in self._pool):
                self._pool.append(owner.reshape(-1))

    def _get(self, i: int, j: int) -> _Acc:
        acc = self._ram.get((i, j))
        if acc is not None:
            return acc
        acc = self._new_acc(i, j)
        if (i, j) in self._spilled:
            layers = self._spilled.pop((i, j))
            self._read_layers(acc.data, layers)
            for _, rects in layers:
                for r in rects:
                    acc.rects = _add_rect(acc.rects, *r)
            acc.layers = layers
        self._ram[(i, j)] = acc
        return acc

    def _read_layers(self, data: np.ndarray, layers: list[Layer], own_buffer: bool = False) -> None:
        """Apply saved ``layers`` (files of rectangles, in order) to the zeroed accumulator ``data``."""
        try:
            for fname, rects in layers:
                with open(self._dir / fname, "rb") as fh:
                    for y0, y1, x0, x1 in rects:
                        self._read_into(fh, data[:, y0:y1, x0:x1], own_buffer)
                    if fh.read(1):
                        raise ValueError("longer than its rectangles")
        except (OSError, ValueError) as exc:
            raise OutputError(f"the resume state in {self._dir} is damaged ({exc}); "
                              "pass --overwrite to start again") from exc

    def _accumulate(self, row: int, col: int, probs: np.ndarray) -> None:
        lay = self.layout
        ty, tx = row * lay.stride, col * lay.stride
        h_valid = min(lay.tile_size, lay.height_t - ty)
        w_valid = min(lay.tile_size, lay.width_t - tx)
        fy0 = ty + lay.overlap if row > 0 else ty
        fx0 = tx + lay.overlap if col > 0 else tx
        for i in lay.chunk_range(ty, h_valid):
            cy0, cy1, _, _ = lay.chunk_box(i, 0)
            ys, ye = max(ty, cy0), min(ty + h_valid, cy1)
            for j in lay.chunk_range(tx, w_valid):
                _, _, cx0, cx1 = lay.chunk_box(i, j)
                xs, xe = max(tx, cx0), min(tx + w_valid, cx1)
                acc = self._get(i, j)
                # No earlier tile (row-major) reaches below fy0 or right of fx0 within this tile, so the
                # accumulator is still 0 there: store w * p directly (0 + x == x, bit for bit).
                fy, fx = min(max(fy0, ys), ye), min(max(fx0, xs), xe)
                for y0, y1, x0, x1, fresh in ((ys, fy, xs, xe, False), (fy, ye, xs, fx, False),
                                              (fy, ye, fx, xe, True)):
                    if y0 < y1 and x0 < x1:
                        self._blend(acc.data, probs, y0 - ty, y1 - ty, x0 - tx, x1 - tx,
                                    y0 - cy0, x0 - cx0, fresh)
                acc.touch(ys - cy0, ye - cy0, xs - cx0, xe - cx0)

    def _blend(self, data: np.ndarray, probs: np.ndarray, ty0: int, ty1: int, tx0: int, tx1: int,
               cy: int, cx: int, fresh: bool) -> None:
        """Add ``w * p`` of tile rows/cols ``[ty0, ty1) x [tx0, tx1)`` to ``data`` at chunk pixel (cy, cx)."""
        k, h, w_ = self.n_classes, ty1 - ty0, tx1 - tx0
        w = self._window[ty0:ty1, tx0:tx1]
        p = probs[:, ty0:ty1, tx0:tx1]
        region = data[:k, cy:cy + h, cx:cx + w_]
        if fresh:
            np.multiply(p, w, out=region)
            data[k, cy:cy + h, cx:cx + w_] = w
        else:
            tmp = self._scratch[:, :h, :w_]
            np.multiply(p, w, out=tmp)
            region += tmp
            data[k, cy:cy + h, cx:cx + w_] += w

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
            self._save(i, j, acc)
            self._spilled[(i, j)] = acc.layers
            self._recycle(acc.data)
        return out

    def _finalise(self, i: int, j: int) -> FinishedChunk:
        box = self.layout.chunk_box(i, j)
        if (i, j) in self._spilled:  # read back (and normalised) by whoever writes it, when it does
            layers = self._spilled.pop((i, j))

            def load() -> np.ndarray:
                acc = self._new_acc(i, j)
                self._read_layers(acc.data, layers, own_buffer=True)
                return self._normalise(acc.data, np.empty(acc.data.shape[1:], np.float32))

            return FinishedChunk(i, j, box, None, load)
        if (i, j) not in self._ram:
            return FinishedChunk(i, j, box, None)
        acc = self._ram.pop((i, j))
        n = acc.data[0].size
        if self._inv.size < n:
            self._inv = np.empty(n, np.float32)
        return FinishedChunk(i, j, box, self._normalise(acc.data, self._inv[:n].reshape(acc.data.shape[1:])))

    def _normalise(self, data: np.ndarray, inv: np.ndarray) -> np.ndarray:
        """The probabilities ``sum(w * p) / sum(w)`` of a finished accumulator ``(k + 1, h, w)``, in place:
        a ``(k, h, w)`` view of ``data``. ``inv`` is a float32 ``(h, w)`` scratch plane."""
        k = self.n_classes
        # covered pixels have weight >= MIN_WEIGHT**2, so this is 1 / weight there; uncovered ones hold
        # probability sums of exactly 0, which stay 0
        np.maximum(data[k], np.float32(1e-30), out=inv)
        np.divide(np.float32(1.0), inv, out=inv)
        probs = data[:k]
        probs *= inv
        return probs
