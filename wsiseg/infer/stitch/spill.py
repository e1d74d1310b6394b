"""Accumulators on disk: spilled when memory is over budget, and saved as the resume state.

A chunk's accumulator is saved as *layers*: small raw float32 files, each holding the ``(k + 1, h, w)``
C-order blocks of some rectangles, one after another (the rectangles' shapes are in the state, not in the
file). Applying a chunk's layers in order to a zeroed accumulator restores it. File names carry a
generation number that grows with every write, so files of a committed state can be told from newer ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import numpy as np

from wsiseg.errors import OutputError, option
from wsiseg.infer.stitch.accumulator import Accumulator, Layer
from wsiseg.io.atomic import replacing

#: A chunk's saved state is compacted into one layer beyond this many.
MAX_LAYERS = 6


def _damaged(where: Path, problem: object) -> OutputError:
    return OutputError(f"the resume state in {where} is damaged ({problem}); pass "
                       f"{option('overwrite', flag=True)} to start again")


class SpillStore:
    """Layer files of accumulators in ``work_dir`` (created if missing); ``gen`` is the last generation
    written. Reading and writing use one reused I/O buffer (the stitching thread's); readers in other
    threads pass ``own_buffer``."""

    def __init__(self, work_dir: Path, gen: int = 0) -> None:
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.gen = gen
        self._io_buf = np.empty(0, np.float32)

    def save(self, i: int, j: int, acc: Accumulator) -> None:
        """Make ``acc.layers`` hold the accumulator's current state (writes only what changed since the
        last save; compacts the layers into one file of every touched rectangle beyond
        :data:`MAX_LAYERS`)."""
        if not acc.dirty:
            return
        if len(acc.layers) >= MAX_LAYERS:
            acc.layers = [(self._write(i, j, acc.data, acc.rects), [list(r) for r in acc.rects])]
        else:
            acc.layers.append((self._write(i, j, acc.data, acc.dirty), acc.dirty))
        acc.dirty = []

    def read(self, data: np.ndarray, layers: list[Layer], own_buffer: bool = False) -> None:
        """Apply saved ``layers`` (in order) to the zeroed accumulator ``data``; OutputError if damaged."""
        try:
            for fname, rects in layers:
                with open(self.dir / fname, "rb") as fh:
                    for y0, y1, x0, x1 in rects:
                        self._read_into(fh, data[:, y0:y1, x0:x1], own_buffer)
                    if fh.read(1):
                        raise ValueError("longer than its rectangles")
        except (OSError, ValueError) as exc:
            raise _damaged(self.dir, exc) from exc

    def collect_garbage(self, keep: set[str], gen: int) -> None:
        """Delete layer files of generation ``<= gen`` (a committed state) that are not in ``keep``; newer
        files belong to the next state and stay."""
        for path in self.dir.glob("acc_*.f32"):
            try:
                file_gen = int(path.stem.rsplit("_", 1)[1])
            except (IndexError, ValueError):
                continue
            if path.name not in keep and file_gen <= gen:
                path.unlink(missing_ok=True)

    def _write(self, i: int, j: int, data: np.ndarray, rects: list[list[int]]) -> str:
        self.gen += 1
        fname = f"acc_{i}_{j}_{self.gen}.f32"
        with replacing(self.dir / fname) as tmp, open(tmp, "wb") as fh:
            for y0, y1, x0, x1 in rects:  # the rectangles, one after the other (shapes are in the state)
                fh.write(self._contiguous(data[:, y0:y1, x0:x1]).data)
        return fname

    def _contiguous(self, block: np.ndarray) -> np.ndarray:
        """``block`` itself when C-contiguous, else a copy in the reused buffer."""
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

    def _read_into(self, fh: IO[bytes], block: np.ndarray, own_buffer: bool) -> None:
        """Fill ``block`` (a view into an accumulator) with the next ``block.nbytes`` bytes of ``fh``."""
        if block.flags.c_contiguous:
            target = block
        else:
            target = np.empty(block.shape, np.float32) if own_buffer else self._io_view(block.shape)
        view = target.data.cast("B")
        if fh.readinto(view) != view.nbytes:  # type: ignore[attr-defined]
            raise ValueError("shorter than its rectangles")
        if target is not block:
            np.copyto(block, target)


def layers_of(state_accs: dict[str, Any], where: Path) -> dict[tuple[int, int], list[Layer]]:
    """The saved layers per chunk of a state's ``accs`` entry (``"i,j" -> [[file, rects], ...]``)."""
    out: dict[tuple[int, int], list[Layer]] = {}
    try:
        for key, layers in state_accs.items():
            i, j = (int(v) for v in key.split(","))
            out[(i, j)] = [(str(fname), [[int(v) for v in r] for r in rects]) for fname, rects in layers]
    except (TypeError, ValueError, AttributeError) as exc:
        raise _damaged(where, repr(exc)) from exc
    return out
