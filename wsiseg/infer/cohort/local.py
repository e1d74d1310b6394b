"""A cohort run in this process: slides one after another with one model (each slide's tiles are still read,
predicted and written concurrently inside :func:`~wsiseg.infer.segment.segment_slide`)."""

from __future__ import annotations

from collections.abc import Generator

from wsiseg.errors import WsisegError
from wsiseg.infer.cohort.plan import Outcome, SlideJob, run_job
from wsiseg.infer.options import SegmentOptions
from wsiseg.predictor import Predictor


def run_local(jobs: list[SlideJob], model: Predictor, progress: bool, single: bool,
              options: SegmentOptions) -> Generator[Outcome, None, None]:
    """Run the jobs in order; a slide's WsisegError becomes its outcome (raised with ``single``)."""
    for job in jobs:
        try:
            yield Outcome(job.index, result=run_job(job, model, progress, options))
        except WsisegError as exc:
            if single:
                raise
            yield Outcome(job.index, error=exc)
