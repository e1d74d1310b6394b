"""A cohort run in this process with one model: slides as a pipeline of three phases, so that the model
never waits between slides.

While the model runs over slide *i* (:meth:`~wsiseg.infer.segment.SlideTask.predict`; its tiles are read,
predicted and written concurrently inside it), slide *i + 1* is planned in one thread (opened, its tissue
and QC found, its tiles laid out: :func:`~wsiseg.infer.segment.plan_slide`, and its first batch read:
:meth:`~wsiseg.infer.segment.SlideTask.prefetch`) and slide *i - 1* finished in
another (QC label image, composition, preview, GeoJSON and objects: :meth:`SlideTask.finish` and
:func:`~wsiseg.infer.cohort.plan.export_job`). Every phase of a slide still runs once and in order, so the
outputs are those of slide-after-slide runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from wsiseg.errors import WsisegError
from wsiseg.infer.cohort.plan import Outcome, SlideJob, check_objects, export_job
from wsiseg.infer.options import SegmentOptions
from wsiseg.infer.segment import SegmentResult, SlideTask, plan_slide
from wsiseg.predictor import Predictor

Finishing = deque[tuple[SlideJob, "Future[SegmentResult]"]]


def run_local(jobs: list[SlideJob], model: Predictor, progress: bool, single: bool,
              options: SegmentOptions) -> Generator[Outcome, None, None]:
    """The jobs' outcomes as their slides finish (in input order); a slide's WsisegError becomes its
    outcome (raised with ``single``)."""
    if not jobs:
        return
    finishing: Finishing = deque()
    with ThreadPoolExecutor(1, thread_name_prefix="wsiseg-plan") as planner, \
            ThreadPoolExecutor(1, thread_name_prefix="wsiseg-finish") as finisher:
        planned: Future[SlideTask | SegmentResult] | None = planner.submit(_plan, jobs[0], model, progress,
                                                                            options)
        try:
            for i, job in enumerate(jobs):
                assert planned is not None
                current, planned = planned, None
                if i + 1 < len(jobs):  # the next slide is planned while this one is predicted
                    planned = planner.submit(_plan, jobs[i + 1], model, progress, options)
                finishing.append((job, _start(current, job, finisher, single, options)))
                yield from _finished(finishing, single, wait=False)
            yield from _finished(finishing, single, wait=True)
        finally:
            if planned is not None:
                _close_unused(planned)


def _start(planned: Future[SlideTask | SegmentResult], job: SlideJob, finisher: ThreadPoolExecutor,
           single: bool, options: SegmentOptions) -> Future[SegmentResult]:
    """Predict a planned slide here; its finishing (in ``finisher``), or its WsisegError, as a future (so
    that outcomes keep the input order)."""
    try:
        task = planned.result()
    except WsisegError as exc:
        if single:
            raise
        return _failed(exc)
    except BaseException:
        _close_unused(planned)  # interrupted while it was being planned: closed once it is
        raise
    try:
        return finisher.submit(_predicted(task, job, options))
    except WsisegError as exc:
        if single:
            raise
        return _failed(exc)


def _plan(job: SlideJob, model: Predictor, progress: bool,
          options: SegmentOptions) -> SlideTask | SegmentResult:
    check_objects(model, options)
    task = plan_slide(job.slide, model, job.out, options, progress=progress)
    if isinstance(task, SlideTask):
        try:
            task.prefetch()
        except BaseException:
            task.close()
            raise
    return task


def _predicted(task: SlideTask | SegmentResult, job: SlideJob,
               options: SegmentOptions) -> Callable[[], SegmentResult]:
    """Run the model phase of a planned slide; what the finishing thread then runs."""
    if isinstance(task, SegmentResult):  # finished already: only its exports, if missing
        return partial(export_job, job, task, options)
    try:
        task.predict()
    except BaseException:
        task.close()
        raise
    return partial(_finish, job, task, options)


def _finish(job: SlideJob, task: SlideTask, options: SegmentOptions) -> SegmentResult:
    with task:
        result = task.finish()
    return export_job(job, result, options)


def _finished(finishing: Finishing, single: bool, *, wait: bool) -> Generator[Outcome, None, None]:
    """Outcomes of the finished slides at the head of ``finishing`` (all of them with ``wait``)."""
    while finishing and (wait or finishing[0][1].done()):
        job, future = finishing.popleft()
        try:
            yield Outcome(job.index, result=future.result())
        except WsisegError as exc:
            if single:
                raise
            yield Outcome(job.index, error=exc)


def _failed(exc: WsisegError) -> Future[SegmentResult]:
    """A slide's error as a finished future, so that it is reported in input order."""
    future: Future[SegmentResult] = Future()
    future.set_exception(exc)
    return future


def _close_unused(planned: Future[SlideTask | SegmentResult]) -> None:
    """Close a slide that was planned but never predicted (the run stopped early; waits for its planning
    to end when it is under way)."""
    if planned.cancel() or planned.exception() is not None:
        return
    task = planned.result()
    if isinstance(task, SlideTask):
        task.close()
