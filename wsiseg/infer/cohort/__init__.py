"""Many slides at once, a cohort: :func:`segment_slides`, here one after another (:mod:`.local`) or on a Dask
distributed cluster (:mod:`.cluster`); the jobs (:mod:`.plan`), the model each run builds
(:mod:`.model_spec`) and the cohort table (:mod:`.summary`). Torch-free and ``distributed``-free at import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from wsiseg.errors import ConfigError, WsisegError, one_line, option
from wsiseg.infer.cohort.cluster import connect, run_cluster
from wsiseg.infer.cohort.devices import DeviceCluster
from wsiseg.infer.cohort.local import run_local
from wsiseg.infer.cohort.model_spec import NULL_MODEL, ModelSpec
from wsiseg.infer.cohort.plan import Outcome, SlideJob, plan_jobs
from wsiseg.infer.cohort.summary import write_summary
from wsiseg.infer.options import SegmentOptions
from wsiseg.infer.replicas import ModelReplicas
from wsiseg.infer.segment import RunStatus, SegmentResult
from wsiseg.predictor import Predictor

#: Where per-slide lines go (one line each, no newline); the default writes them under the progress bars.
Report = Callable[[str], None]


def _stderr(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


@dataclass
class CohortResult:
    """What :func:`segment_slides` did: ``results`` of the finished slides and ``(slide, message)``
    ``failures`` (one-line messages), both in input order; ``seconds``: wall time of the whole run."""

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


def segment_slides(slides: Sequence[Path], model: Predictor | ModelSpec, out: Path,
                   options: SegmentOptions | None = None, *, single: bool, geojson: Path | None = None,
                   scheduler: str | None = None, devices: Sequence[str] | None = None, progress: bool = True,
                   report: Report = _stderr, **changes: Any) -> CohortResult:
    """Segment several slides; one that fails is reported and the others go on.

    Args:
        slides: slide files.
        model: a built :class:`Predictor` (local runs only) or a :class:`ModelSpec` (built once here, or
            once per worker process in cluster mode).
        out: with ``single``, the ``.zarr`` of the one slide; otherwise a directory receiving
            ``<slide stem>.zarr`` per slide (two slides with the same stem: the second fails).
        options: :class:`~wsiseg.infer.options.SegmentOptions` for every slide (``changes``: option names
            as keywords, applied on top); a mask path is made absolute for workers.
        single: one slide written to ``out`` itself; its failure raises instead of being collected.
        geojson: also export QuPath GeoJSON (:func:`wsiseg.export.export_geojson`): the file with
            ``single``, else a directory receiving ``<slide stem>.geojson`` per slide.
        scheduler: ``None`` (run here, slide after slide) or a ``distributed`` scheduler address
            (``tcp://host:8786``): one task per slide on its workers, which must see the slides, the
            checkpoint files and ``out`` under the same paths (all are sent as absolute paths).
        devices: several devices of this machine (``["cuda:0", "cuda:1"]``, ``["cpu", "cpu"]``): one
            worker process per device with its own model replica, slides handed out as workers finish
            (:mod:`wsiseg.infer.cohort.devices`); with fewer slides than devices, one replica per device in
            this process instead, each slide's batches spread over all of them
            (:mod:`wsiseg.infer.replicas`). Needs a :class:`ModelSpec`. One device: the spec's.
        progress: progress bars (overall slides; tiles of the current slide when local) and one summary
            or error line per slide, given to ``report`` (default: stderr, under the bars).

    A slide whose output is finished already is skipped (status ``skipped``, not a failure) unless
    ``options.overwrite``; an unfinished one resumes. Without ``single``, ``out/summary.csv`` gets one row
    per slide (:mod:`wsiseg.export.composition`): status, analysed area and per-class areas and shares.

    Raises:
        ConfigError: a :class:`Predictor` with ``scheduler`` (workers need a checkpoint path to load),
            ``distributed`` not installed, or the scheduler unreachable. With ``single``, whatever the
            slide's run raises.
    """
    t0 = time.perf_counter()
    options = (options or SegmentOptions()).replace(**changes)
    several = devices is not None and len(devices) > 1
    if several and scheduler is not None:
        raise ConfigError(f"give {option('devices')} or {option('scheduler')}, not both")
    jobs, clashes = plan_jobs(slides, Path(out), single, None if geojson is None else Path(geojson),
                              absolute=scheduler is not None or several)
    failures: dict[int, tuple[Path, str]] = {i: (Path(slides[i]), msg) for i, msg in clashes}
    results: dict[int, SegmentResult] = {}
    with contextlib.ExitStack() as stack:
        outcomes = _outcomes(stack, jobs, model, options, scheduler=scheduler,
                             devices=devices if several else None, progress=progress, single=single)
        stack.callback(outcomes.close)  # before the client closes
        local_single = single and scheduler is None and not several  # its own tile bar says it all
        overall = stack.enter_context(tqdm(total=len(slides), unit="slide", desc="slides", file=sys.stderr,
                                           disable=not progress or local_single, dynamic_ncols=True))
        for index, message in clashes:
            overall.update(1)
            if progress:
                report(f"wsiseg: error: {Path(slides[index]).name}: {message}")
        for outcome in outcomes:
            slide = Path(slides[outcome.index])
            if outcome.result is not None:
                results[outcome.index] = outcome.result
                if progress:
                    where = f" [worker {outcome.worker}]" if outcome.worker else ""
                    report(outcome.result.summary() + where)
            else:
                if single and outcome.error is not None:
                    raise outcome.error
                message = one_line(outcome.error if outcome.error is not None else outcome.message)
                if single:
                    raise WsisegError(message)
                failures[outcome.index] = (slide, message)
                if progress:
                    report(f"wsiseg: error: {slide.name}: {message}")
            overall.update(1)
    if not single:
        write_summary(Path(out), slides, results, failures)
    return CohortResult([results[i] for i in sorted(results)], [failures[i] for i in sorted(failures)],
                        time.perf_counter() - t0)


def _outcomes(stack: contextlib.ExitStack[Any], jobs: list[SlideJob], model: Predictor | ModelSpec,
              options: SegmentOptions, *, scheduler: str | None, devices: Sequence[str] | None,
              progress: bool, single: bool) -> Generator[Outcome, None, None]:
    """The jobs' outcomes as they finish: on the cluster at ``scheduler``; with several ``devices``, on one
    local worker per device, or, when there are fewer slides than devices, here with one model replica per
    device sharing each slide's batches; else here, slide after slide; a client or cluster closes with
    ``stack``."""
    if devices is not None and len(jobs) < len(devices) and isinstance(model, ModelSpec):
        # fewer slides than devices: every device on each slide in turn (replicas in this process)
        replicas = ModelReplicas([dataclasses.replace(model, device=d).build() for d in devices])
        return run_local(jobs, replicas, progress, single, options)
    if scheduler is not None or devices is not None:
        if not isinstance(model, ModelSpec):
            what = "cluster mode needs" if scheduler is not None else "several devices need"
            raise ConfigError(f"{what} a checkpoint path (a ModelSpec), not a built model: each worker loads "
                              "its own model")
        client = connect(scheduler) if scheduler is not None else DeviceCluster(devices or ())
        return run_cluster(stack.enter_context(client), jobs, model, options)
    predictor = model.build() if isinstance(model, ModelSpec) else model
    return run_local(jobs, predictor, progress, single, options)


__all__ = ["NULL_MODEL", "CohortResult", "ModelSpec", "Report", "segment_slides"]
