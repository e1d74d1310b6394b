"""One slide's segmentation as an object: :class:`SegmentationRun` owns read -> infer -> stitch -> write and
the commit protocol that makes it resumable.

The commit protocol (:class:`Checkpointer`): every ``checkpoint_s`` seconds the stitcher's state (grid
cursor and saved accumulators) is saved; the journal commits a saved state only once every chunk finished
before it is on disk, so a run killed at any moment resumes from a state whose chunks all exist. One saved
state stays in flight, so stitching overlaps with writing. A write error stops the commits: no later state
is ever committed over chunks that were not written.

A tile that cannot be decoded (a damaged slide) is, by default, not stitched: its area stays "not
analysed", a warning line names it, and it is listed (with the commits, so a resumed run keeps the list)
in the output's metadata; ``ReadErrorPolicy.FAIL`` makes it fail the slide instead.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from tqdm import tqdm

from wsiseg.errors import ConfigError, SlideError
from wsiseg.infer.journal import Journal
from wsiseg.infer.options import ReadErrorPolicy
from wsiseg.infer.pipeline import StageTimes, run_pipeline
from wsiseg.infer.quality import RunQC
from wsiseg.infer.replicas import replicas_of
from wsiseg.infer.stitch import FinishedChunk, Stitcher
from wsiseg.io.omezarr import SegmentationWriter
from wsiseg.predictor import Predictor, lanes_of
from wsiseg.qc import FocusGrid
from wsiseg.slide.grid import Tile, TileGrid
from wsiseg.slide.reader import Slide
from wsiseg.tiling import Tiling


class ChunkWriter:
    """Finished chunks -> the OME-Zarr writer on ``workers`` threads. At most ``2 * workers`` chunks wait
    for a writer (the caller blocks beyond), so memory stays bounded when writing lags; a spilled chunk is
    read back only by the thread that writes it, and its buffer then goes back to the stitcher."""

    def __init__(self, writer: SegmentationWriter, stitcher: Stitcher, workers: int,
                 times: StageTimes, qc: RunQC | None = None) -> None:
        self._writer, self._stitcher, self._times, self._qc = writer, stitcher, times, qc
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="wsiseg-write")
        self._max_queued = 2 * max(1, workers)
        self._queued: list[Future[None]] = []

    def _write(self, chunk: FinishedChunk) -> None:
        t0 = time.perf_counter()
        probs = chunk.get()  # a spilled chunk is read back only now
        if probs is not None:
            excluded = None if self._qc is None else self._qc.excluded(chunk.box)
            if excluded is not None:  # artifacts: written as not analysed
                probs[:, excluded[:probs.shape[1], :probs.shape[2]]] = 0
            self._writer.write_chunk(chunk.box, probs)
            self._stitcher.release(chunk)  # its buffer serves a later chunk (no fresh pages)
        self._times.add("write", time.perf_counter() - t0)

    def submit(self, chunks: list[FinishedChunk]) -> list[Future[None]]:
        """Queue the non-empty ``chunks``; returns their futures. Raises the error of an earlier write seen
        failed while waiting for room, but only once every chunk is queued (none is lost: the caller stops
        committing, see :meth:`Checkpointer.fail`)."""
        futures = []
        failed: BaseException | None = None
        for chunk in chunks:
            if chunk.empty:
                continue
            while len(self._queued) >= self._max_queued:  # back-pressure
                oldest = self._queued.pop(0)
                wait([oldest])
                failed = failed or oldest.exception()
            futures.append(self._pool.submit(self._write, chunk))
            self._queued.append(futures[-1])
        self._queued[:] = [f for f in self._queued if not f.done()]
        if failed is not None:
            raise failed
        return futures

    def close(self) -> None:
        """Wait for every queued write and stop the threads."""
        self._pool.shutdown(wait=True)


#: A saved state in flight: its chunks' write futures, the stitcher state, the unreadable tiles, the
#: blurred blocks.
_SavedState = tuple[list[Future[None]], dict[str, Any], list[dict[str, Any]], list[list[int]]]


@dataclass
class Checkpointer:
    """The commit protocol of a run (see the module docstring)."""

    journal: Journal
    stitcher: Stitcher
    fingerprint: dict[str, Any]
    times: StageTimes
    interval_s: float
    #: tiles that could not be read, in grid order (committed with the state; see SegmentationRun)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    #: the run's focus grid, whose blurred blocks are committed with the state (None: no blur check)
    focus: FocusGrid | None = None
    #: saved states whose chunks are being written: (their write futures, the state, the unreadable tiles,
    #: the blurred blocks)
    _in_flight: list[_SavedState] = field(default_factory=list)
    _pending: list[Future[None]] = field(default_factory=list)  # chunk writes since the last save
    _unsaved: int = 0  # tiles stitched since the last save
    _last_save: float = field(default_factory=time.perf_counter)
    _failed: list[BaseException] = field(default_factory=list)

    def stitched(self, writes: list[Future[None]], n_tiles: int) -> None:
        """``n_tiles`` more tiles are stitched, their finished chunks being written by ``writes``: save a
        state when the interval has passed."""
        self._pending.extend(writes)
        self._unsaved += n_tiles
        if time.perf_counter() - self._last_save >= self.interval_s:
            self.save()

    def fail(self, exc: BaseException) -> None:
        """Stitching failed midway: the stitcher's state may be past chunks never handed to a writer, so
        nothing more is saved or committed (a resumed run redoes everything after the last commit)."""
        self._failed.append(exc)

    def commit_ready(self) -> None:
        """Commit every saved state but the latest (waiting for their chunks to be written)."""
        while len(self._in_flight) > 1:
            self._commit_oldest()

    def save(self) -> None:
        """Save the stitcher state (everything stitched so far) for commit once its chunks are written."""
        blurred = [] if self.focus is None else self.focus.blurred
        self._in_flight.append((list(self._pending), self.stitcher.save_state(), list(self.unreadable),
                                blurred))
        self._pending.clear()
        self._unsaved = 0
        self._last_save = time.perf_counter()

    def flush(self) -> None:
        """Save what is unsaved (unless a write failed) and commit every saved state: everything predicted
        and stitched is then written and committed. Re-raises the first write error."""
        if self._unsaved and not self._failed:
            self.save()
        while self._in_flight:
            self._commit_oldest()

    def _commit_oldest(self) -> None:
        futures, state, unreadable, blurred = self._in_flight.pop(0)
        if self._failed:  # a later state must never be committed over chunks that were not written
            return
        try:
            for fut in futures:
                fut.result()  # the first write error is raised here, before the journal moves on
        except BaseException as exc:
            self._failed.append(exc)
            raise
        t0 = time.perf_counter()
        self.journal.commit({"fingerprint": self.fingerprint, "stitcher": state,
                             "timings": self.times.as_dict(), "unreadable": unreadable, "blurred": blurred})
        self.stitcher.collect_garbage(state)
        self.times.add("journal", time.perf_counter() - t0)


class SegmentationRun:
    """Read -> infer -> stitch -> write for the tiles of ``grid`` the stitcher has not passed yet.

    ``slide`` is open; ``stitcher`` and ``writer`` are ready (fresh, or restored from the journal);
    ``checkpointer`` commits to the journal. :meth:`run` returns the number of tiles predicted.
    """

    def __init__(self, slide: Slide, model: Predictor, tiling: Tiling, grid: TileGrid, stitcher: Stitcher,
                 writer: SegmentationWriter, checkpointer: Checkpointer, *, batch_size: int,
                 read_workers: int, write_workers: int, progress: bool, name: str,
                 on_read_error: ReadErrorPolicy = ReadErrorPolicy.SKIP, qc: RunQC | None = None) -> None:
        self.slide, self.model, self.tiling, self.grid = slide, model, tiling, grid
        self.stitcher, self.checkpointer, self.qc = stitcher, checkpointer, qc
        self.times = checkpointer.times
        self.chunks = ChunkWriter(writer, stitcher, write_workers, self.times, qc)
        self.batch_size, self.read_workers = batch_size, read_workers
        self.remaining = [t for t in grid.tiles if t.index >= stitcher.cursor]
        self._k = len(model.classes)
        self.name, self.on_read_error = name, on_read_error
        self._failed: dict[int, str] = {}  # tile index -> why it could not be read (reader threads)
        self._failed_lock = threading.Lock()
        self._first_batch: np.ndarray | None = None  # the first batch's pixels, read before the run started
        self._progress = progress
        self._bar: tqdm[Any] | None = None  # made when the run starts (a cohort plans the next slide earlier)

    def run(self) -> int:
        """Predict and stitch the remaining tiles, writing the chunks they finish. When it raises, what was
        stitched before the error is committed to the journal first; otherwise :meth:`complete` commits,
        and writes the chunks the last tiles leave open: the model is free once this returns."""
        t = self.tiling
        n = len(self.grid.tiles)
        self._bar = tqdm(total=n, initial=n - len(self.remaining), unit="tile", desc=self.name,
                         disable=not self._progress, file=sys.stderr, dynamic_ncols=True, leave=True)
        try:
            try:
                predict = [partial(self._predict, replica) for replica in replicas_of(self.model)
                           for _ in range(lanes_of(replica))]
                first, self._first_batch = self._first_batch, None
                run_pipeline(self.remaining, self._read, predict, self._consume,
                             tile_shape=(t.tile_size, t.tile_size, 3), batch_size=self.batch_size,
                             read_workers=self.read_workers, times=self.times, first_batch=first)
            except BaseException:
                self.checkpointer.flush()
                raise
        except BaseException:
            self.chunks.close()
            raise
        finally:
            self._bar.close()
        return len(self.remaining)

    def complete(self) -> None:
        """After :meth:`run`: commit what was stitched, then blend and write the chunks still open (the last
        rows of the slide)."""
        try:
            self.checkpointer.flush()
            t0 = time.perf_counter()
            rest = self.stitcher.finish()
            self.times.add("stitch", time.perf_counter() - t0)
            for fut in self.chunks.submit(rest):
                fut.result()
        finally:
            self.chunks.close()

    def prefetch(self) -> None:
        """Read the first batch's tiles now, exactly as the run would (focus measured, unreadable tiles
        recorded), so that the model starts on them as soon as the run starts: a cohort calls this while
        the model is still busy with the previous slide. Memory: one batch of tiles."""
        t = self.tiling
        first = self.remaining[:self.batch_size]
        pixels = np.empty((len(first), t.tile_size, t.tile_size, 3), np.uint8)
        for tile, out in zip(first, pixels, strict=True):
            self._read(tile, out)
        self._first_batch = pixels

    def _read(self, tile: Tile, out: np.ndarray) -> None:
        t = self.tiling
        try:
            self.slide.read_region(tile.x0, tile.y0, t.tile_size, t.tile_size, t.mpp, out=out)
        except SlideError as exc:
            if self.on_read_error is ReadErrorPolicy.FAIL:
                raise
            out.fill(255)  # predicted with the batch, never stitched
            with self._failed_lock:
                self._failed[tile.index] = str(exc)
            return
        if self.qc is not None:  # in the reader thread: the focus check overlaps the model
            self.qc.measure(tile, out)

    def _predict(self, model: Predictor, tiles: np.ndarray) -> np.ndarray:
        tile_o = self.tiling.tile_o
        probs = model.predict(tiles, tile_o)
        if probs.shape != (tiles.shape[0], self._k, tile_o, tile_o):
            raise ConfigError(f"model returned probabilities of shape {probs.shape}, expected "
                              f"({tiles.shape[0]}, {self._k}, {tile_o}, {tile_o})")
        return probs

    def _consume(self, batch: list[Tile], probs: np.ndarray) -> None:
        t0 = time.perf_counter()
        finished: list[FinishedChunk] = []
        try:
            for tile, p in zip(batch, probs, strict=True):
                with self._failed_lock:
                    problem = self._failed.pop(tile.index, None)
                if problem is None:
                    finished.extend(self.stitcher.add(tile.row, tile.col, p))
                else:  # the cursor passes it, so a resumed run does not read it again
                    self._skip_unreadable(tile, problem)
                    finished.extend(self.stitcher.advance(tile.index + 1))
            writes = self.chunks.submit(finished)
        except BaseException as exc:
            self.checkpointer.fail(exc)
            raise
        self.checkpointer.stitched(writes, len(batch))
        self.times.add("stitch", time.perf_counter() - t0)
        if self._bar is not None:
            self._bar.update(len(batch))
        self.checkpointer.commit_ready()

    def _skip_unreadable(self, tile: Tile, problem: str) -> None:
        """Record a tile that could not be read (its area stays "not analysed") and say so on stderr."""
        self.checkpointer.unreadable.append({"index": tile.index, "col": tile.col, "row": tile.row,
                                             "x0": tile.x0, "y0": tile.y0, "error": problem})
        tqdm.write(f"wsiseg: warning: {self.name}: tile (col {tile.col}, row {tile.row}) at level-0 "
                   f"({tile.x0}, {tile.y0}) could not be read and is written as not analysed ({problem})",
                   file=sys.stderr)
