"""``segment_slide``: one whole slide -> OME-Zarr probability/label pyramid (+ preview PNG), resumable.

It resolves the options against the model (a :class:`~wsiseg.tiling.Tiling`), lays out the tiles, decides
whether the output is new, resumed, skipped (finished already) or refused (:mod:`wsiseg.infer.output`), and
hands the work to a :class:`~wsiseg.infer.run.SegmentationRun`; then it records the tissue composition,
writes the preview and marks the output finished.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg._version import __version__
from wsiseg.errors import SlideError
from wsiseg.infer.blending import blend_window
from wsiseg.infer.journal import WORK_DIR, Journal
from wsiseg.infer.options import SegmentOptions
from wsiseg.infer.output import existing_metadata, prepare, preview_path
from wsiseg.infer.pipeline import StageTimes
from wsiseg.infer.quality import RunQC, plan_region
from wsiseg.infer.run import Checkpointer, SegmentationRun
from wsiseg.infer.stitch import Layout, Stitcher
from wsiseg.io.omezarr import SegmentationWriter
from wsiseg.io.output_metadata import OutputMetadata, SlideRecord
from wsiseg.predictor import Predictor
from wsiseg.qc import QCAreas
from wsiseg.slide import Slide, make_tile_grid, open_slide
from wsiseg.slide.grid import TileGrid

#: Bytes of the slide file hashed for the provenance checksum.
HEAD_BYTES = 1 << 20


class RunStatus(str, enum.Enum):
    """What :func:`segment_slide` did with an output."""

    DONE = "done"  #: segmented from the start
    RESUMED = "resumed"  #: an interrupted run continued
    SKIPPED = "skipped"  #: finished already (``overwrite`` redoes it)


@dataclass
class SegmentResult:
    """What one :func:`segment_slide` run did.

    ``mpp``: analysis resolution (um/px of the tiles the model saw); ``output_mpp``: um/px of the output's
    level 0, ``width, height`` its size in pixels; ``n_tiles``: tiles analysed (tissue) out of
    ``n_tiles_total`` in the grid; ``n_predicted``: tiles this run sent to the model (fewer than ``n_tiles``
    when it resumed, 0 when skipped); ``n_unreadable``: tiles that could not be decoded (not analysed);
    ``timings``: seconds per stage (see :class:`~wsiseg.infer.pipeline.StageTimes`).
    """

    slide: Path
    out: Path
    preview: Path | None
    mpp: float
    output_mpp: float
    width: int
    height: int
    n_tiles: int
    n_tiles_total: int
    n_predicted: int
    status: RunStatus
    timings: dict[str, Any] = field(default_factory=dict)
    n_unreadable: int = 0
    #: objects per class when the run exported objects (``SegmentOptions.objects``), else None
    objects: dict[str, int] | None = None

    @property
    def resumed(self) -> bool:
        return self.status is RunStatus.RESUMED

    def summary(self) -> str:
        if self.status is RunStatus.SKIPPED:
            return f"{self.slide.name}: skipped (finished) -> {self.out}"
        rate = self.n_predicted / self.timings["wall"] if self.timings.get("wall") else 0.0
        resumed = ", resumed" if self.resumed else ""
        unreadable = f", {self.n_unreadable} unreadable tiles not analysed" if self.n_unreadable else ""
        return (f"{self.slide.name}: {self.n_tiles}/{self.n_tiles_total} tiles at {self.mpp:g} um/px, "
                f"output {self.width}x{self.height} px at {self.output_mpp:g} um/px "
                f"in {self.timings.get('wall', 0.0):.1f} s "
                f"({rate:.1f} tiles/s{resumed}{unreadable}) -> {self.out}")


def sha256_head(path: Path, n_bytes: int = HEAD_BYTES) -> str:
    """SHA-256 of the first ``n_bytes`` of a file (a cheap identity check for multi-GB slides)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(n_bytes))
    return h.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _slide_record(slide: Slide, path: Path) -> SlideRecord:
    w0, h0 = slide.dimensions
    try:
        head = sha256_head(path) if path.is_file() else None
    except OSError as exc:
        raise SlideError(f"cannot read {path}: {exc}") from exc
    return SlideRecord(slide.mpp, path.name, str(path.resolve()), w0, h0, slide.vendor, slide.bounds, head)


def _fingerprint(slide_info: dict[str, Any], provenance: dict[str, Any], params: dict[str, Any],
                 grid: TileGrid) -> dict[str, Any]:
    """What must not change for a run to resume: slide, model, parameters, wsiseg and the tile set; not
    where the model runs (a run of two GPUs may resume on one: same weights, same precision)."""
    tile_set = hashlib.sha256(np.array([t.index for t in grid.tiles], np.int64).tobytes()).hexdigest()
    model = {k: v for k, v in provenance.items() if k != "device"}
    data = {"slide": slide_info, "model": model, "params": params, "version": __version__,
            "tiles_sha256": tile_set}
    fingerprint: dict[str, Any] = json.loads(json.dumps(data))  # as a journal stores it
    return fingerprint


def segment_slide(slide_path: str | Path, model: Predictor, out: str | Path,
                  options: SegmentOptions | None = None, *, progress: bool = True,
                  **changes: Any) -> SegmentResult:
    """Segment one slide into an OME-Zarr at ``out`` (see :mod:`wsiseg.io.omezarr` for the layout).

    Args:
        slide_path: any slide :func:`wsiseg.slide.open_slide` reads.
        model: a :class:`~wsiseg.predictor.Predictor`.
        out: the ``.zarr`` directory to write; a finished one raises :class:`OutputExistsError` unless
            ``options.overwrite``; an unfinished one from the same slide/model/parameters is resumed.
        options: :class:`~wsiseg.infer.options.SegmentOptions` (resolution, tiles, what to analyse,
            output, throughput); ``changes``: option names as keywords, applied on top
            (``segment_slide(s, m, o, mpp=0.5)``).
        progress: a progress bar on stderr.

    A run killed with ``kill -9`` redoes only the tiles stitched since its last checkpoint; a run stopped
    by an error or Ctrl-C checkpoints everything it stitched before it ends. The three phases
    (:func:`plan_slide`, :meth:`SlideTask.predict`, :meth:`SlideTask.finish`) are public so that a cohort
    can overlap one slide's model phase with its neighbours' planning and finishing.
    """
    task = plan_slide(slide_path, model, out, (options or SegmentOptions()).replace(**changes),
                      progress=progress)
    if isinstance(task, SegmentResult):
        return task
    with task:
        task.predict()
        return task.finish()


def plan_slide(slide_path: str | Path, model: Predictor, out: str | Path, options: SegmentOptions, *,
               progress: bool = True) -> SlideTask | SegmentResult:
    """The first phase of :func:`segment_slide` (no model call): open the slide, find its analysable tissue
    (QC), lay out the tiles, and create or reopen the output; the :class:`SlideTask` that runs the rest, or
    the result when the output is finished already (skipped). The task holds the slide open: use it as a
    context manager (or call :meth:`SlideTask.close`)."""
    started, t_start = _now(), time.perf_counter()
    slide_path, out = Path(slide_path), Path(out)
    previous = existing_metadata(out, options.overwrite)
    if previous is not None and previous.finished is not None and not options.overwrite:
        return _skipped(slide_path, out, previous)
    slide = open_slide(slide_path, mpp=options.slide_mpp)  # its MissingMppError names --slide-mpp
    try:
        return SlideTask(slide_path, out, slide, model, options, previous, progress, (started, t_start))
    except BaseException:
        slide.close()
        raise


class SlideTask:
    """One slide between :func:`plan_slide` and its result: :meth:`predict` runs the model over its tiles
    (read -> infer -> stitch -> write), :meth:`finish` writes the chunks the last tiles left open and what
    needs every tile (QC label image, composition, preview) and marks the output finished. Timings:
    ``wall`` counts planning, the model phase and finishing, not time spent waiting between them."""

    def __init__(self, slide_path: Path, out: Path, slide: Slide, model: Predictor, options: SegmentOptions,
                 previous: OutputMetadata | None, progress: bool, start: tuple[str, float]) -> None:
        """``start``: when planning began (ISO time for the metadata, perf_counter seconds)."""
        started, t_start = start
        self.slide_path, self.out, self.slide, self.options = slide_path, out, slide, options
        self.tiling = tiling = options.tiling(model)
        slide_record = _slide_record(slide, slide_path)
        provenance = model.provenance()
        region, self.qc = plan_region(slide, options, tiling)
        self.grid = grid = make_tile_grid(slide, tiling, tissue=region,
                                          min_tissue_fraction=options.min_tissue_fraction)
        if self.qc is not None:
            self.qc.attach(grid)
        params = options.recorded(tiling)
        fingerprint = _fingerprint(slide_record.to_json(), provenance, params, grid)
        self.journal = journal = Journal(out)
        self.state = state = prepare(out, journal, fingerprint, options.overwrite)
        committed = (journal.load() or {}) if state is not None else {}
        resumed_id = previous.run_id if previous is not None and state is not None else ""
        self.layout = layout = Layout.of(grid, tiling)
        self.writer = SegmentationWriter(out, width=layout.width_o, height=layout.height_o,
                                         mpp=tiling.output_mpp, classes=model.classes,
                                         chunk_size=tiling.chunk_size, version=options.ngff_version,
                                         create=state is None)
        self.metadata = OutputMetadata(slide_record, model.classes, tiling.output_mpp, tiling.mpp, provenance,
                                       params, __version__, resumed_id or uuid.uuid4().hex, started,
                                       tiles_analysed=len(grid.tiles), tiles_total=grid.n_total)
        self.previous_timings = committed.get("timings", {})
        self.writer.write_metadata(self.metadata)
        window = blend_window(tiling.tile_o, tiling.overlap_o, options.blend)
        stitcher = Stitcher(layout, len(model.classes), window, journal.dir, state=state)
        if state is None:
            journal.commit({"fingerprint": fingerprint, "stitcher": stitcher.save_state(), "timings": {}})
        self.times = StageTimes()
        focus = None if self.qc is None else self.qc.focus
        if focus is not None:
            focus.restore(committed.get("blurred", []))
        self.checkpointer = Checkpointer(journal, stitcher, fingerprint, self.times, options.checkpoint_s,
                                         unreadable=list(committed.get("unreadable", [])), focus=focus)
        read_workers, write_workers = options.workers()
        self.run = SegmentationRun(slide, model, tiling, grid, stitcher, self.writer, self.checkpointer,
                                   batch_size=options.batch_size, read_workers=read_workers,
                                   write_workers=write_workers, progress=progress, name=slide_path.name,
                                   on_read_error=options.on_read_error, qc=self.qc)
        self.n_predicted = 0
        self._busy_s = time.perf_counter() - t_start  # planning; predict and finish add theirs

    def prefetch(self) -> None:
        """Read the first batch's tiles now (see :meth:`SegmentationRun.prefetch`): a cohort calls this while
        the model is still busy with the previous slide, so the model's first batch here is ready."""
        t0 = time.perf_counter()
        self.run.prefetch()
        self._busy_s += time.perf_counter() - t0

    def predict(self) -> int:
        """Run the model over the tiles not stitched yet; the number of tiles predicted."""
        t0 = time.perf_counter()
        try:
            self.n_predicted = self.run.run()
        finally:
            self._busy_s += time.perf_counter() - t0
        return self.n_predicted

    def finish(self) -> SegmentResult:
        """Write what needs every tile, mark the output finished and remove the journal (after
        :meth:`predict`)."""
        t0 = time.perf_counter()
        self.run.complete()
        unreadable = self.checkpointer.unreadable
        qc_record, tissue, png = _summaries(self.out, self.slide, self.writer, self.layout, self.qc,
                                            self.options)
        self.times.wall = self._busy_s + time.perf_counter() - t0
        timings: dict[str, Any] = dict(self.times.as_dict())
        if self.previous_timings:
            timings["previous_runs"] = self.previous_timings
        resumed = self.state is not None
        self.writer.write_metadata(self.metadata.finish(_now(), timings=timings, resumed=resumed,
                                                        composition=tissue, qc=qc_record,
                                                        unreadable_tiles=unreadable))
        self.journal.remove()
        status = RunStatus.RESUMED if resumed else RunStatus.DONE
        layout, grid = self.layout, self.grid
        return SegmentResult(self.slide_path, self.out, png, self.tiling.mpp, self.tiling.output_mpp,
                             layout.width_o, layout.height_o, len(grid.tiles), grid.n_total, self.n_predicted,
                             status, timings, len(unreadable))

    def close(self) -> None:
        """Close the slide."""
        self.slide.close()

    def __enter__(self) -> SlideTask:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _summaries(out: Path, slide: Slide, writer: SegmentationWriter, layout: Layout, qc: RunQC | None,
               options: SegmentOptions) -> tuple[dict[str, Any] | None, dict[str, Any], Path | None]:
    """What a run writes once every tile is in, before it marks the output finished (a run killed here
    redoes only this): the QC label image and record, the tissue composition, the preview. The QC label
    image is rewritten before the output is opened again: a run killed while writing it left it
    half-written, and opening reads every label image."""
    qc_record = None
    if qc is not None:
        size_um = (slide.dimensions[0] * slide.mpp[0], slide.dimensions[1] * slide.mpp[1])
        areas = qc.write(writer, layout, size_um)
        qc_record = qc.record(areas)
        _warn_if_mostly_artifact(slide.path.name, areas, options.qc_settings.warn_excluded_share)
    from wsiseg.export.composition import composition
    from wsiseg.io.omezarr import open_segmentation

    tissue = composition(open_segmentation(out)).to_dict()
    png: Path | None = None
    if options.preview:
        from wsiseg.infer.preview import write_preview

        png = write_preview(out, slide, preview_path(out), options.preview_size)
    return qc_record, tissue, png


def _warn_if_mostly_artifact(name: str, areas: QCAreas, share: float) -> None:
    """A ``wsiseg: warning:`` line when artifacts cover more than ``share`` of the slide's tissue."""
    if areas.tissue_um2 > 0 and areas.excluded_share > share:
        parts = ", ".join(f"{k} {areas.share(k):.0%}" for k, v in areas.excluded_um2.items() if v > 0)
        print(f"wsiseg: warning: {name}: artifacts cover {areas.excluded_share:.0%} of the tissue ({parts}); "
              "check the slide and its QC overlay (the preview, labels/qc)", file=sys.stderr)


def _skipped(slide_path: Path, out: Path, metadata: OutputMetadata) -> SegmentResult:
    """The result of a finished output left as it is."""
    from wsiseg.io.omezarr import open_segmentation

    seg = open_segmentation(out)
    height, width = (int(v) for v in seg.labels[0].shape)
    png = preview_path(out)
    return SegmentResult(slide_path, out, png if png.exists() else None, metadata.analysis_mpp, metadata.mpp,
                         width, height, metadata.tiles_analysed, metadata.tiles_total, 0, RunStatus.SKIPPED,
                         {}, len(metadata.unreadable_tiles))


__all__ = ["WORK_DIR", "RunStatus", "SegmentResult", "SlideTask", "plan_region", "plan_slide", "preview_path",
           "segment_slide", "sha256_head"]
