"""Many slides at once: :func:`segment_slides`, locally one after another or on a Dask distributed cluster.

Local (``scheduler=None``): slides run one after another in this process, each with the model built once
(every slide's tiles are still read, predicted and written concurrently inside
:func:`~wsiseg.infer.segment.segment_slide`).

Cluster (``scheduler="tcp://host:8786"``): one task per slide is submitted to a ``distributed`` scheduler.
A worker builds the model from its :class:`ModelSpec` (once per worker process, then cached), reopens the
slide by its absolute path, writes ``<out>/<stem>.zarr`` itself and sends back a small result, so workers
must see the slides, the checkpoints and the output directory under the same paths (a shared file system).
An interrupted run resumes per slide from each output's journal when started again.

Torch-free and ``distributed``-free at import time: the model and the client are imported when used.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wsiseg.errors import ConfigError, WsisegError, one_line
from wsiseg.infer.options import SegmentOptions
from wsiseg.infer.segment import RunStatus, SegmentResult, segment_slide
from wsiseg.predictor import Predictor
from wsiseg.qc.settings import QCMode

#: ``ModelSpec.checkpoint`` value selecting :class:`~wsiseg.infer.reference_models.NullModel`.
NULL_MODEL = "null"

def _fspath(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


@dataclass(frozen=True)
class ModelSpec:
    """How to build a :class:`Predictor`: picklable and hashable, so cluster workers build (and cache) it.

    Args:
        checkpoint: ``"null"`` (:class:`~wsiseg.infer.reference_models.NullModel`, constant output) or the
            path of a ``.wsiseg`` checkpoint (:func:`wsiseg.model.load_model`).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; resolved where the model is built
            (on each worker in cluster mode).
        sam_checkpoint, hipt_checkpoint: the official SAM/HIPT weight files a slim checkpoint needs.
        mpp, tile_size: resolution (um/px) and tile side (px) of the null model, which needs both;
            ignored for checkpoints (they record their own; pass ``mpp``/``tile_size`` to
            :func:`segment_slides` to analyse at another resolution).
        precision: ``fp32`` (default: the reference's arithmetic), ``bf16`` or ``fp16`` (GPUs: faster,
            probabilities within ~1e-3); compile: ``torch.compile`` the model (see
            :class:`~wsiseg.model.SamPathPredictor`).

    Path-like arguments are stored as strings. Raises :class:`ConfigError` for a null model without
    ``mpp`` and ``tile_size``.
    """

    checkpoint: str
    device: str = "auto"
    sam_checkpoint: str | None = None
    hipt_checkpoint: str | None = None
    mpp: float | None = None
    tile_size: int | None = None
    precision: str = "fp32"
    compile: bool = False

    def __init__(self, checkpoint: str | os.PathLike[str], device: str = "auto", *,
                 sam_checkpoint: str | os.PathLike[str] | None = None,
                 hipt_checkpoint: str | os.PathLike[str] | None = None,
                 mpp: float | None = None, tile_size: int | None = None, precision: str = "fp32",
                 compile: bool = False) -> None:
        set_ = object.__setattr__  # frozen
        set_(self, "checkpoint", os.fspath(checkpoint))
        set_(self, "device", device)
        set_(self, "sam_checkpoint", _fspath(sam_checkpoint))
        set_(self, "hipt_checkpoint", _fspath(hipt_checkpoint))
        set_(self, "mpp", mpp)
        set_(self, "tile_size", tile_size)
        set_(self, "precision", precision)
        set_(self, "compile", compile)
        if self.is_null and (mpp is None or tile_size is None):
            raise ConfigError("--model null needs --mpp and --tile-size")

    @property
    def is_null(self) -> bool:
        """True for the constant :class:`~wsiseg.infer.reference_models.NullModel`."""
        return self.checkpoint == NULL_MODEL

    def absolute(self) -> ModelSpec:
        """The same spec with absolute file paths (what cluster workers get)."""
        def absolute(path: str | None) -> str | None:
            return None if path is None else str(Path(path).absolute())

        return replace(self, checkpoint=self.checkpoint if self.is_null else str(absolute(self.checkpoint)),
                       sam_checkpoint=absolute(self.sam_checkpoint),
                       hipt_checkpoint=absolute(self.hipt_checkpoint))

    def build(self) -> Predictor:
        """Load the model (imports torch for checkpoints). Raises CheckpointError, ConfigError."""
        if self.is_null:
            from wsiseg.infer.reference_models import NullModel
            from wsiseg.synthetic import SYNTHETIC_CLASSES

            assert self.mpp is not None and self.tile_size is not None  # checked in __init__
            return NullModel(SYNTHETIC_CLASSES, self.mpp, self.tile_size)
        from wsiseg.model import load_model

        predictor: Predictor = load_model(self.checkpoint, device=self.device,
                                          sam_checkpoint=self.sam_checkpoint,
                                          hipt_checkpoint=self.hipt_checkpoint, precision=self.precision,
                                          compile=self.compile)
        return predictor


@dataclass
class BatchResult:
    """What :func:`segment_slides` did: ``results`` of the finished slides and ``(slide, message)``
    ``failures`` (one-line messages), both in input order; ``seconds``: wall time of the whole batch."""

    results: list[SegmentResult] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no slide failed."""
        return not self.failures

    @property
    def n_tiles(self) -> int:
        """Tiles analysed over all finished slides."""
        return sum(r.n_tiles for r in self.results)

    def count(self, status: RunStatus) -> int:
        """Slides that ended with ``status``."""
        return sum(r.status is status for r in self.results)

    def summary(self) -> str:
        """One line: how many slides were done, resumed, skipped (finished already) and failed."""
        total = len(self.results) + len(self.failures)
        line = (f"{total} slide{'' if total == 1 else 's'}: {self.count(RunStatus.DONE)} done, "
                f"{self.count(RunStatus.RESUMED)} resumed, "
                f"{self.count(RunStatus.SKIPPED)} skipped (finished), {len(self.failures)} failed; "
                f"{self.n_tiles} tiles, {self.seconds:.1f} s")
        if self.failures:
            line += "; failed: " + ", ".join(path.name for path, _ in self.failures)
        return line


@dataclass(frozen=True)
class _Job:
    """One slide of a batch: its position in the input, the slide and where its outputs go."""

    index: int
    slide: Path
    out: Path
    geojson: Path | None


@dataclass
class _Outcome:
    """A job's result (small and picklable): the SegmentResult, or the WsisegError it raised."""

    index: int
    result: SegmentResult | None = None
    error: WsisegError | None = None
    message: str | None = None  # failures that are not a WsisegError (a worker that died)
    worker: str | None = None


def _segment_one(job: _Job, model: Predictor, progress: bool, options: SegmentOptions) -> SegmentResult:
    """Segment one slide and export its GeoJSON if asked (the same in both modes; a skipped slide's
    GeoJSON is written only when it is missing): the classes, and beside them the QC artifacts for review
    (``<name>.qc.geojson``) when the run did QC."""
    result = segment_slide(job.slide, model, job.out, options, progress=progress)
    if job.geojson is not None and (result.status is not RunStatus.SKIPPED or not job.geojson.exists()):
        from wsiseg.export import export_geojson, qc_geojson_path

        job.geojson.parent.mkdir(parents=True, exist_ok=True)
        export_geojson(job.out, job.geojson, frame=options.geojson_frame)
        if options.qc is not QCMode.OFF and _has_qc(job.out):
            export_geojson(job.out, qc_geojson_path(job.geojson), frame=options.geojson_frame, labels="qc")
    return result


def _has_qc(out: Path) -> bool:
    from wsiseg.io.omezarr import open_segmentation

    return "qc" in open_segmentation(out).label_images


# -- cluster workers --------------------------------------------------------------------------------------

_predictor_lock = threading.Lock()
#: The model built last in this (worker) process, by spec: a worker handling many slides loads it once.
_predictor_cache: dict[ModelSpec, Predictor] = {}


def _cached_predictor(spec: ModelSpec) -> Predictor:
    """``spec.build()``, cached per process (one entry, so a long-lived worker holds one model)."""
    with _predictor_lock:
        predictor = _predictor_cache.get(spec)
        if predictor is None:
            _predictor_cache.clear()
            predictor = _predictor_cache[spec] = spec.build()
        return predictor


def _worker_address() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None


class _Cancelled(Exception):
    """The scheduler released the running slide task (its client was interrupted or went away)."""


def _cancel_check() -> Callable[[], bool]:
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


class _StopWhenCancelled:
    """A :class:`Predictor` delegating to ``inner`` that raises :class:`_Cancelled` before a batch once
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
            raise _Cancelled("cancelled by the scheduler")
        probs: np.ndarray = self.inner.predict(tiles, *args, **kwargs)
        return probs

    def provenance(self) -> dict[str, Any]:
        return self.inner.provenance()


def _run_on_worker(spec: ModelSpec, job: _Job, options: SegmentOptions) -> _Outcome:
    """The task a cluster worker runs for one slide; user-facing failures come back as values.

    A cluster-wide lock on the output makes a rerun's task wait for one of an interrupted run that is
    still finishing its current batch, instead of writing the same output at the same time.
    """
    from distributed import Lock

    model = _StopWhenCancelled(_cached_predictor(spec), _cancel_check())
    try:
        with Lock(f"wsiseg-output:{job.out}"):
            result = _segment_one(job, model, False, options)
    except WsisegError as exc:
        return _Outcome(job.index, error=exc, worker=_worker_address())
    except _Cancelled as exc:
        return _Outcome(job.index, message=str(exc), worker=_worker_address())
    return _Outcome(job.index, result=result, worker=_worker_address())


def _connect(scheduler: str) -> Any:
    """A ``distributed.Client`` on ``scheduler``; ConfigError: no distributed, or scheduler unreachable."""
    try:
        import dask
        from distributed import Client
    except ImportError:
        raise ConfigError("cluster mode (--scheduler) needs dask.distributed: "
                          "pip install 'wsiseg[distributed]'") from None
    timeout = dask.config.get("distributed.comm.timeouts.connect")
    problem = ""
    try:
        return Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        problem = one_line(exc)  # not chained: the traceback would keep the half-made client alive
    raise ConfigError(f"cannot connect to the Dask scheduler {scheduler}: {problem}")


def _run_cluster(client: Any, jobs: list[_Job], spec: ModelSpec,
                 options: SegmentOptions) -> Generator[_Outcome, None, None]:
    """Submit one task per job through ``client``; yield outcomes as slides finish."""
    from distributed import KilledWorker, as_completed

    spec, options = spec.absolute(), options.absolute()
    run = uuid.uuid4().hex[:8]
    futures = {client.submit(_run_on_worker, spec, job, options, pure=False,
                             key=f"wsiseg-segment-{job.slide.name}-{run}-{job.index}"): job for job in jobs}
    try:
        for future in as_completed(futures, loop=client.loop):
            job = futures[future]
            try:
                outcome: _Outcome = future.result()
            except KilledWorker as exc:
                outcome = _Outcome(job.index, message=f"the workers running it died ({one_line(exc)}); "
                                                      "run again to resume")
            yield outcome
    finally:
        client.cancel(list(futures))  # slides not started yet do not start (running ones finish)


def _run_local(jobs: list[_Job], model: Predictor, progress: bool, single: bool,
               options: SegmentOptions) -> Generator[_Outcome, None, None]:
    for job in jobs:
        try:
            yield _Outcome(job.index, result=_segment_one(job, model, progress, options))
        except WsisegError as exc:
            if single:
                raise
            yield _Outcome(job.index, error=exc)


def _jobs(slides: Sequence[Path], out: Path, single: bool, geojson: Path | None,
          absolute: bool) -> tuple[list[_Job], list[tuple[int, str]]]:
    """Jobs for the slides, and ``(index, message)`` for slides whose output another slide already has."""
    if single and len(slides) != 1:
        raise ConfigError(f"single=True needs exactly one slide, got {len(slides)}")
    jobs: list[_Job] = []
    clashes: list[tuple[int, str]] = []
    first_by_out: dict[Path, Path] = {}
    for index, slide in enumerate(slides):
        slide = Path(slide)
        target = out if single else out / (slide.stem + ".zarr")
        gj = None if geojson is None else geojson if single else geojson / (slide.stem + ".geojson")
        if absolute:
            slide, target = slide.absolute(), target.absolute()
            gj = None if gj is None else gj.absolute()
        if target in first_by_out:
            clashes.append((index, f"its output {target} is also the output of {first_by_out[target]}; "
                                   "rename one of them"))
            continue
        first_by_out[target] = slide
        jobs.append(_Job(index, slide, target, gj))
    return jobs, clashes


def segment_slides(slides: Sequence[Path], model: Predictor | ModelSpec, out: Path,
                   options: SegmentOptions | None = None, *, single: bool, geojson: Path | None = None,
                   scheduler: str | None = None, progress: bool = True, **changes: Any) -> BatchResult:
    """Segment several slides; one that fails is reported and the others go on.

    Args:
        slides: slide files.
        model: a built :class:`Predictor` (local runs only) or a :class:`ModelSpec` (built once here, or
            once per worker process in cluster mode).
        out: with ``single``, the ``.zarr`` of the one slide; otherwise a directory receiving
            ``<slide stem>.zarr`` per slide (two slides with the same stem: the second fails).
        single: one slide written to ``out`` itself; its failure raises instead of being collected.
        geojson: also export QuPath GeoJSON (:func:`wsiseg.export.export_geojson`): the file with
            ``single``, else a directory receiving ``<slide stem>.geojson`` per slide.

    A slide whose output is finished already is skipped (status ``skipped``, not a failure) unless
    ``options.overwrite``; an unfinished one resumes. Without ``single``, ``out/summary.csv`` gets one row
    per slide (:mod:`wsiseg.export.composition`): status, analysed area and per-class areas and shares.
        scheduler: ``None`` (run here, slide after slide) or a ``distributed`` scheduler address
            (``tcp://host:8786``): one task per slide on its workers, which must see the slides, the
            checkpoint files and ``out`` under the same paths (all are sent as absolute paths).
        progress: progress bars (overall slides; tiles of the current slide when local) and one summary
            or error line per slide on stderr.
        options: :class:`~wsiseg.infer.options.SegmentOptions` for every slide (``changes``: option names
            as keywords, applied on top); a mask path is made absolute for workers.

    Returns:
        :class:`BatchResult`, results and failures in input order.

    Raises:
        ConfigError: a :class:`Predictor` with ``scheduler`` (workers need a checkpoint path to load),
            ``distributed`` not installed, or the scheduler unreachable. With ``single``, whatever the
            slide's run raises.
    """
    t0 = time.perf_counter()
    options = (options or SegmentOptions()).replace(**changes)
    jobs, clashes = _jobs(slides, Path(out), single, None if geojson is None else Path(geojson),
                          absolute=scheduler is not None)
    failures: dict[int, tuple[Path, str]] = {i: (Path(slides[i]), msg) for i, msg in clashes}
    results: dict[int, SegmentResult] = {}
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            if not isinstance(model, ModelSpec):
                raise ConfigError("cluster mode needs a checkpoint path (a ModelSpec), not a built model: "
                                  "workers load the model themselves")
            client = stack.enter_context(_connect(scheduler))
            outcomes = _run_cluster(client, jobs, model, options)
        else:
            predictor = model.build() if isinstance(model, ModelSpec) else model
            outcomes = _run_local(jobs, predictor, progress, single, options)
        stack.callback(outcomes.close)  # before the client closes
        local_single = single and scheduler is None  # its own tile bar says it all
        overall = stack.enter_context(tqdm(total=len(slides), unit="slide", desc="slides", file=sys.stderr,
                                           disable=not progress or local_single, dynamic_ncols=True))
        for index, message in clashes:
            overall.update(1)
            if progress:
                tqdm.write(f"wsiseg: error: {Path(slides[index]).name}: {message}", file=sys.stderr)
        for outcome in outcomes:
            slide = Path(slides[outcome.index])
            if outcome.result is not None:
                results[outcome.index] = outcome.result
                if progress:
                    where = f" [worker {outcome.worker}]" if outcome.worker else ""
                    tqdm.write(outcome.result.summary() + where, file=sys.stderr)
            else:
                if single and outcome.error is not None:
                    raise outcome.error
                message = one_line(outcome.error if outcome.error is not None else outcome.message)
                if single:
                    raise WsisegError(message)
                failures[outcome.index] = (slide, message)
                if progress:
                    tqdm.write(f"wsiseg: error: {slide.name}: {message}", file=sys.stderr)
            overall.update(1)
    batch = BatchResult([results[i] for i in sorted(results)], [failures[i] for i in sorted(failures)],
                        time.perf_counter() - t0)
    if not single:
        _write_summary(Path(out), slides, results, failures)
    return batch


def _write_summary(out: Path, slides: Sequence[Path], results: dict[int, SegmentResult],
                   failures: dict[int, tuple[Path, str]]) -> None:
    """``out/summary.csv``: one row per input slide, in input order."""
    from wsiseg.export.composition import SUMMARY_FILE, SummaryRow, row_of, write_summary

    rows = []
    for index in range(len(slides)):
        if index in results:
            rows.append(row_of(results[index].out, results[index].status.value))
        else:
            rows.append(SummaryRow(Path(slides[index]).name, "failed", error=failures[index][1]))
    out.mkdir(parents=True, exist_ok=True)
    write_summary(rows, out / SUMMARY_FILE)


__all__ = ["NULL_MODEL", "BatchResult", "ModelSpec", "segment_slides"]
