"""The jobs of a cohort run: one per slide, where its outputs go, and what running one means."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wsiseg.errors import ConfigError, WsisegError
from wsiseg.infer.options import SegmentOptions
from wsiseg.infer.segment import RunStatus, SegmentResult, segment_slide
from wsiseg.predictor import Predictor
from wsiseg.qc.settings import QCMode


@dataclass(frozen=True)
class SlideJob:
    """One slide of a cohort run: its position in the input, the slide and where its outputs go."""

    index: int
    slide: Path
    out: Path
    geojson: Path | None


@dataclass
class Outcome:
    """A job's result (small and picklable): the SegmentResult, or the WsisegError it raised, or a message
    for failures that are not one (a worker that died); ``worker``: where it ran (cluster mode)."""

    index: int
    result: SegmentResult | None = None
    error: WsisegError | None = None
    message: str | None = None
    worker: str | None = None


def plan_jobs(slides: Sequence[Path], out: Path, single: bool, geojson: Path | None,
              absolute: bool) -> tuple[list[SlideJob], list[tuple[int, str]]]:
    """Jobs for the slides (``out/<stem>.zarr`` each, or ``out`` itself with ``single``), and ``(index,
    message)`` for slides whose output another slide already has."""
    if single and len(slides) != 1:
        raise ConfigError(f"single=True needs exactly one slide, got {len(slides)}")
    jobs: list[SlideJob] = []
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
        jobs.append(SlideJob(index, slide, target, gj))
    return jobs, clashes


def check_objects(model: Predictor, options: SegmentOptions) -> None:
    """The classes ``options.objects`` asks for exist (checked before a slide is segmented, not after)."""
    unknown = [c for c in options.objects if c not in model.classes.names]
    if unknown:
        raise ConfigError(f"no class {', '.join(map(repr, unknown))} to export as objects; the model's "
                          f"classes: {', '.join(model.classes.names)}")


def run_job(job: SlideJob, model: Predictor, progress: bool, options: SegmentOptions) -> SegmentResult:
    """Segment one slide and export what it asks for (:func:`export_job`)."""
    check_objects(model, options)
    return export_job(job, segment_slide(job.slide, model, job.out, options, progress=progress), options)


def export_job(job: SlideJob, result: SegmentResult, options: SegmentOptions) -> SegmentResult:
    """Export a segmented slide's GeoJSON if the job asks for it (the same in every mode; a skipped slide's
    GeoJSON is written only when it is missing): the classes, and beside them the QC artifacts for review
    (``<name>.qc.geojson``) when the run did QC, and the objects of ``options.objects`` with their table
    (``<name>.objects.geojson``, ``<name>.objects.csv``), counted into the result."""
    if job.geojson is not None and (result.status is not RunStatus.SKIPPED or not job.geojson.exists()):
        from wsiseg.export import export_geojson, qc_geojson_path
        from wsiseg.io.omezarr import open_segmentation

        job.geojson.parent.mkdir(parents=True, exist_ok=True)
        export_geojson(job.out, job.geojson, frame=options.geojson_frame)
        if options.qc is not QCMode.OFF and "qc" in open_segmentation(job.out).label_images:
            export_geojson(job.out, qc_geojson_path(job.geojson), frame=options.geojson_frame, labels="qc")
    if job.geojson is not None and options.objects:
        return dataclasses.replace(result, objects=_objects(job, result, options))
    return result


def _objects(job: SlideJob, result: SegmentResult, options: SegmentOptions) -> dict[str, int]:
    """Export the objects (again only when the slide was segmented now or their table is missing) and
    count them from their table."""
    from wsiseg.export import export_geojson
    from wsiseg.export.objects import count_objects, objects_geojson_path, table_path

    assert job.geojson is not None
    path = objects_geojson_path(job.geojson)
    if result.status is not RunStatus.SKIPPED or not table_path(path).exists():
        export_geojson(job.out, path, classes=options.objects, objects=True, frame=options.geojson_frame,
                       object_type="detection")
    counts = count_objects(table_path(path))
    return {name: counts.get(name, 0) for name in options.objects}
