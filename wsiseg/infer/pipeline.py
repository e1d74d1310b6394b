"""The three overlapping stages of a run: Dask-scheduled tile reads, batched inference, stitching/writing.

::

    reader thread:  batches of tiles -> one dask task graph of reads per batch (dask's threaded
                    scheduler), ``prefetch`` batches in flight at once on a shared thread pool
                    (``read_workers``) -> queue, in batch order
    model threads:  queue -> predict(batch) (the device stays busy) -> queue; one per model replica
                    (the calling thread runs the first), each taking the next batch when it is free
    writer thread:  queue -> consume(tiles, probs) in batch order (stitch, write finished chunks, commit
                    the journal)

Keeping several batches' reads in flight means the pool never idles at a batch boundary waiting for the
slowest tile of a batch. Both queues are bounded, so memory holds a few batches whatever the slide size.
Order is preserved end to end: batches are consumed in the order they were formed, whichever replica
predicted them.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import numpy as np
from dask.threaded import get as dask_threaded_get

T = TypeVar("T")
_STOP = object()


@dataclass
class StageTimes:
    """Seconds spent per stage. ``read`` and ``write`` sum the tasks over all their worker threads;
    ``infer`` is time inside the model (summed over the model threads); ``wait_input`` is model threads
    idle waiting for tiles, ``wait_output`` model threads holding a result the writer has no room for yet;
    ``stitch`` is blending (and saving resume state); ``journal`` is committing the resume journal;
    ``wall`` is the whole run.

    Where the model's idle time goes: ``model_busy`` is the time at least one model thread was inside the
    model's ``predict`` (the union over threads; host time, so on a GPU it includes the copies to and from
    pinned memory, and it is an upper bound of the time the device had work queued); between two such spans
    the model was idle: ``idle_gaps`` of them, ``idle_between`` seconds in all, the longest
    ``longest_idle_gap``; ``first_batch`` seconds from the pipeline's start to the first span (reading the
    first batch). ``pipeline`` is the pipeline's own duration: ``wall`` minus it is planning and finishing
    the output."""

    read: float = 0.0
    infer: float = 0.0
    wait_input: float = 0.0
    wait_output: float = 0.0
    stitch: float = 0.0
    write: float = 0.0
    journal: float = 0.0
    wall: float = 0.0
    model_busy: float = 0.0
    idle_gaps: int = 0
    idle_between: float = 0.0
    longest_idle_gap: float = 0.0
    first_batch: float = 0.0
    pipeline: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _active: int = field(default=0, repr=False)
    _since: float | None = field(default=None, repr=False)  # start of the busy span, or of the idle one
    _started: float = field(default_factory=time.perf_counter, repr=False)

    def pipeline_started(self) -> None:
        """The pipeline starts: ``first_batch`` and ``pipeline`` count from here."""
        with self._lock:
            self._started = time.perf_counter()

    def pipeline_ended(self) -> None:
        """The pipeline ends (every batch handed to the writer): adds its duration to ``pipeline``."""
        with self._lock:
            self.pipeline += time.perf_counter() - self._started

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + seconds)

    def model_started(self) -> None:
        """A model thread enters the model."""
        with self._lock:
            now = time.perf_counter()
            if self._active == 0:
                if self._since is None:
                    self.first_batch = now - self._started
                else:
                    gap = now - self._since
                    self.idle_gaps += 1
                    self.idle_between += gap
                    self.longest_idle_gap = max(self.longest_idle_gap, gap)
                self._since = now
            self._active += 1

    def model_finished(self, seconds: float) -> None:
        """A model thread leaves the model after ``seconds`` in it."""
        with self._lock:
            now = time.perf_counter()
            self.infer += seconds
            self._active -= 1
            if self._active == 0 and self._since is not None:
                self.model_busy += now - self._since
                self._since = now

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(getattr(self, k)), 4)
                for k in ("read", "infer", "wait_input", "wait_output", "stitch", "write", "journal", "wall",
                          "model_busy", "idle_gaps", "idle_between", "longest_idle_gap", "first_batch",
                          "pipeline")}


class _Stage(Generic[T]):
    """A daemon thread running ``fn``; its exception is kept and re-raised by :meth:`join`."""

    def __init__(self, name: str, fn: Callable[[], None], stop: threading.Event) -> None:
        self.error: BaseException | None = None
        self._fn, self._stop = fn, stop
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:
            self.error = exc
            self._stop.set()


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


Predict = Callable[[np.ndarray], np.ndarray]


def run_pipeline(tiles: Sequence[T], read: Callable[[T, np.ndarray], object], predict: Sequence[Predict],
                 consume: Callable[[list[T], np.ndarray], None], *, tile_shape: tuple[int, ...],
                 batch_size: int, read_workers: int, times: StageTimes, prefetch: int = 2,
                 first_batch: np.ndarray | None = None) -> None:
    """Read, predict and consume ``tiles`` in order, overlapping the three stages.

    ``read(tile, out)`` writes one tile (RGB uint8 ``tile_shape``, e.g. ``(S, S, 3)``) into ``out``, its
    slot of the batch array (no copy to stack a batch); each of ``predict`` (one per model replica, each
    called from its own thread) maps ``(N, *tile_shape)`` to ``(N, k, s, s)``; ``consume(batch_tiles,
    probs)`` runs in the writer thread in batch order. The first exception of any stage stops the others;
    batches predicted before it are still consumed in order, then it is re-raised. ``first_batch``: the
    pixels of the first ``batch_size`` tiles, read already (the model starts on them at once).
    """
    if not predict:
        raise ValueError("run_pipeline needs at least one predict function")
    batches = [list(tiles[i:i + batch_size]) for i in range(0, len(tiles), batch_size)]
    lanes = max(1, prefetch, len(predict) + 1)  # every replica finds a batch read when it is free
    pipeline = _Pipeline(batches, read, predict, consume, tile_shape, max(1, read_workers), times, lanes)
    if first_batch is not None and batches:
        if first_batch.shape != (len(batches[0]), *tile_shape):
            raise ValueError(f"the first batch read already has shape {first_batch.shape}, expected "
                             f"{(len(batches[0]), *tile_shape)}")
        pipeline.first_batch = first_batch
    pipeline.run()


class _Pipeline(Generic[T]):
    """One run of :func:`run_pipeline`: the reader and writer threads and the model loop between them."""

    def __init__(self, batches: list[list[T]], read: Callable[[T, np.ndarray], object],
                 predict: Sequence[Predict], consume: Callable[[list[T], np.ndarray], None],
                 tile_shape: tuple[int, ...], read_workers: int, times: StageTimes, lanes: int) -> None:
        self.batches, self.read, self.predict, self.consume = batches, read, predict, consume
        self.tile_shape, self.read_workers, self.times = tile_shape, read_workers, times
        self.lanes = lanes  # batches being read at once
        self.first_batch: np.ndarray | None = None
        self.stop = threading.Event()
        # the writer must not be stopped by a failing model: it drains what was predicted, then ends
        self.write_stop = threading.Event()
        self.read_q: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.write_q: queue.Queue[Any] = queue.Queue(maxsize=max(1, len(predict) - 1))
        # batches handed to the models and not consumed yet: at most one queued, one per replica and what
        # the writer holds back to restore batch order (a stalled replica must not let the others run
        # ahead by the whole slide); the reader takes a token per batch, the writer gives it back
        self.tokens = threading.Semaphore(2 * len(predict) + 1)

    def run(self) -> None:
        self.times.pipeline_started()
        read_stage = _Stage[Any]("wsiseg-reader", self._reader, self.stop)
        write_stage = _Stage[Any]("wsiseg-writer", self._writer, self.write_stop)
        model_stages = [_Stage[Any](f"wsiseg-model-{i}", partial(self._model_loop, fn), self.stop)
                        for i, fn in enumerate(self.predict[1:], start=1)]
        for stage in (read_stage, write_stage, *model_stages):
            stage.thread.start()
        model_error: BaseException | None = None
        try:
            self._model_loop(self.predict[0])
        except BaseException as exc:
            model_error = exc
            self.stop.set()
        finally:
            for stage in model_stages:
                stage.thread.join()
            self.stop.set()
            # drain the read queue so a blocked reader can see ``stop``
            while read_stage.thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    self.read_q.get(timeout=0.05)
            _put(self.write_q, _STOP, self.write_stop)
            write_stage.thread.join()
            read_stage.thread.join()
            self.times.pipeline_ended()
        errors = [write_stage.error, model_error, *(s.error for s in model_stages), read_stage.error]
        for err in errors:
            if err is not None:
                raise err

    # -- the model threads ---------------------------------------------------------------------------------
    def _model_loop(self, predict: Predict) -> None:
        while True:
            item = self._next_input()
            if item is None:
                return
            if item is _STOP:  # back for the other model threads (the reader put its last item: room for it)
                with contextlib.suppress(queue.Full):
                    self.read_q.put_nowait(_STOP)
                return
            seq, batch, tiles_arr = item
            self.times.model_started()
            t0 = time.perf_counter()
            try:
                probs = predict(tiles_arr)
            finally:
                self.times.model_finished(time.perf_counter() - t0)
            t0 = time.perf_counter()
            handed = _put(self.write_q, (seq, batch, probs), self.write_stop)
            self.times.add("wait_output", time.perf_counter() - t0)
            if not handed:
                return

    def _next_input(self) -> Any:
        """The next read batch (or ``_STOP``), ``None`` once a stage stopped; the wait counts as
        ``wait_input``."""
        t0 = time.perf_counter()
        item = None
        while not self.stop.is_set() and not self.write_stop.is_set():
            try:
                item = self.read_q.get(timeout=0.1)
                break
            except queue.Empty:
                continue
        self.times.add("wait_input", time.perf_counter() - t0)
        return item

    # -- the reader thread ---------------------------------------------------------------------------------
    def _reader(self) -> None:
        with ThreadPoolExecutor(max_workers=self.read_workers, thread_name_prefix="wsiseg-read") as pool, \
                ThreadPoolExecutor(max_workers=self.lanes, thread_name_prefix="wsiseg-lane") as lane_pool:
            in_flight: deque[tuple[int, list[T], Future[np.ndarray]]] = deque()
            for seq, batch in enumerate(self.batches):
                if seq == 0 and self.first_batch is not None:
                    ready: Future[np.ndarray] = Future()
                    ready.set_result(self.first_batch)
                    in_flight.append((seq, batch, ready))
                    continue
                in_flight.append((seq, batch, lane_pool.submit(self._read_batch, batch, pool)))
                if len(in_flight) >= self.lanes and not self._hand_on(in_flight.popleft()):
                    return
            while in_flight:
                if not self._hand_on(in_flight.popleft()):
                    return
        _put(self.read_q, _STOP, self.stop)

    def _hand_on(self, read: tuple[int, list[T], Future[np.ndarray]]) -> bool:
        """Queue a batch whose reads were started, once they are done and a token is free; False when the
        run stopped."""
        seq, batch, fut = read
        while not self.tokens.acquire(timeout=0.1):
            if self.stop.is_set():
                return False
        return not self.stop.is_set() and _put(self.read_q, (seq, batch, fut.result()), self.stop)

    def _read_batch(self, batch: list[T], pool: ThreadPoolExecutor) -> np.ndarray:
        arrays = np.empty((len(batch), *self.tile_shape), np.uint8)

        def read_slot(i: int) -> None:  # the array stays out of the graph: dask never inspects it
            t0 = time.perf_counter()
            self.read(batch[i], arrays[i])
            self.times.add("read", time.perf_counter() - t0)

        if not self.stop.is_set():
            # a plain task graph for dask's threaded scheduler: dask.delayed + compute would build the same
            # graph at ~1.4 ms of CPU per tile, more than the pipeline's other overheads
            keys = [("wsiseg-read", i) for i in range(len(batch))]
            dask_threaded_get({key: (read_slot, key[1]) for key in keys}, keys, pool=pool)
        return arrays

    # -- the writer thread ---------------------------------------------------------------------------------
    def _writer(self) -> None:
        """Consume predicted batches in batch order (replicas may finish them out of order)."""
        waiting: dict[int, tuple[list[T], np.ndarray]] = {}
        expected = 0
        while True:
            item = self.write_q.get()
            if item is _STOP:
                return
            seq, batch, probs = item
            waiting[seq] = (batch, probs)
            while expected in waiting:
                self.consume(*waiting.pop(expected))
                self.tokens.release()
                expected += 1
