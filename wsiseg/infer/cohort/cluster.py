"""A cohort run on a Dask distributed cluster: one task per slide.

A worker builds the model from its :class:`~wsiseg.infer.cohort.model_spec.ModelSpec` (once per worker
process, then cached), reopens the slide by its absolute path, writes ``<out>/<stem>.zarr`` itself and sends
back a small result, so workers must see the slides, the checkpoints and the output directory under the
same paths (a shared file system). An interrupted run resumes per slide from each output's journal when
started again. ``distributed`` is imported when used.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from wsiseg.errors import ConfigError, WsisegError, one_line, option
from wsiseg.infer.cohort.model_spec import ModelSpec
from wsiseg.infer.cohort.plan import Outcome, SlideJob, run_job
from wsiseg.infer.options import SegmentOptions
from wsiseg.predictor import Predictor

_predictor_lock = threading.Lock()
#: The model built last in this (worker) process, by spec: a worker handling many slides loads it once.
_predictor_cache: dict[ModelSpec, Predictor] = {}


def cached_predictor(spec: ModelSpec) -> Predictor:
    """``spec.build()``, cached per process (one entry, so a long-lived worker holds one model)."""
    with _predictor_lock:
        predictor = _predictor_cache.get(spec)
        if predictor is None:
            _predictor_cache.clear()
            predictor = _predictor_cache[spec] = spec.build()
        return predictor


def _worker_address() -> str | None:
    """This worker's address, with the device it is pinned to (several-device runs)."""
    from wsiseg.infer.cohort.devices import pinned_device

    try:
        from distributed import get_worker

        address = str(get_worker().address)
    except (ImportError, ValueError):
        return None
    device = pinned_device()
    return address if device is None else f"{address} {device}"


class Cancelled(Exception):
    """The scheduler released the running slide task (its client was interrupted or went away)."""


def cancel_check() -> Callable[[], bool]:
    """A function telling whether the scheduler has cancelled the task running in this worker thread.

    Worker threads cannot be interrupted, so without it a slide whose client was stopped would run on,
    and a rerun would write the same output at the same time.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
        key = worker.get_current_task()
    except (ImportError, ValueError, AttributeError):
        return lambda: False

    def cancelled() -> bool:
        task = worker.state.tasks.get(key)
        return task is None or task.state == "cancelled"

    return cancelled


class StopWhenCancelled:
    """A :class:`Predictor` delegating to ``inner`` that raises :class:`Cancelled` before a batch once
    ``cancelled()`` is true; segment_slide then stops after committing what it finished (so a rerun
    resumes). Provenance is the inner model's, so the output is the same as with ``inner``."""

    def __init__(self, inner: Predictor, cancelled: Callable[[], bool]) -> None:
        self.inner, self.cancelled = inner, cancelled
        self.classes, self.mpp, self.tile_size = inner.classes, inner.mpp, inner.tile_size
        self.device = inner.device
        self.output_stride: int = getattr(inner, "output_stride", 1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict(self, tiles: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        if self.cancelled():
            raise Cancelled("cancelled by the scheduler")
        probs: np.ndarray = self.inner.predict(tiles, *args, **kwargs)
        return probs

    def provenance(self) -> dict[str, Any]:
        return self.inner.provenance()


def run_on_worker(spec: ModelSpec, job: SlideJob, options: SegmentOptions) -> Outcome:
    """The task a cluster worker runs for one slide; user-facing failures come back as values.

    A cluster-wide lock on the output makes a rerun's task wait for one of an interrupted run that is
    still finishing its current batch, instead of writing the same output at the same time.
    """
    import dataclasses

    from distributed import Lock

    from wsiseg.infer.cohort.devices import pinned_device

    device = pinned_device()  # a worker of a DeviceCluster builds its replica on its own device
    if device is not None:
        spec = dataclasses.replace(spec, device=device)
    model = StopWhenCancelled(cached_predictor(spec), cancel_check())
    try:
        with Lock(f"wsiseg-output:{job.out}"):
            result = run_job(job, model, False, options)
    except WsisegError as exc:
        return Outcome(job.index, error=exc, worker=_worker_address())
    except Cancelled as exc:
        return Outcome(job.index, message=str(exc), worker=_worker_address())
    return Outcome(job.index, result=result, worker=_worker_address())


def connect(scheduler: str) -> Any:
    """A ``distributed.Client`` on ``scheduler``; ConfigError: no distributed, or scheduler unreachable."""
    try:
        import dask
        from distributed import Client
    except ImportError:
        raise ConfigError(f"cluster mode ({option('scheduler')}) needs dask.distributed: "
                          "pip install 'wsiseg[distributed]'") from None
    timeout = dask.config.get("distributed.comm.timeouts.connect")
    problem = ""
    try:
        return Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        problem = one_line(exc)  # not chained: the traceback would keep the half-made client alive
    raise ConfigError(f"cannot connect to the Dask scheduler {scheduler}: {problem}")


def run_cluster(client: Any, jobs: list[SlideJob], spec: ModelSpec,
                options: SegmentOptions) -> Generator[Outcome, None, None]:
    """Submit one task per job through ``client``; yield outcomes as slides finish."""
    from distributed import KilledWorker, as_completed

    spec, options = spec.absolute(), options.absolute()
    run = uuid.uuid4().hex[:8]
    futures = {client.submit(run_on_worker, spec, job, options, pure=False,
                             key=f"wsiseg-segment-{job.slide.name}-{run}-{job.index}"): job for job in jobs}
    try:
        for future in as_completed(futures, loop=client.loop):
            job = futures[future]
            try:
                outcome: Outcome = future.result()
            except KilledWorker as exc:
                outcome = Outcome(job.index, message=f"the workers running it died ({one_line(exc)}); "
                                                     "run again to resume")
            yield outcome
    finally:
        client.cancel(list(futures))  # slides not started yet do not start (running ones finish)
