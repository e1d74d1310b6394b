"""``segment_slide``: one whole slide -> OME-Zarr probability/label pyramid (+ preview PNG), resumable."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wsiseg._version import __version__
from wsiseg.errors import ConfigError, OutputError, OutputExistsError, SlideError
from wsiseg.infer._memory import tame_malloc
from wsiseg.infer.blending import BlendWindow, blend_window
from wsiseg.infer.journal import WORK_DIR, Journal
from wsiseg.infer.omezarr import NgffVersion, SegmentationWriter
from wsiseg.infer.pipeline import StageTimes, run_pipeline
from wsiseg.infer.stitch import FinishedChunk, Layout, Stitcher
from wsiseg.predictor import Predictor

#: Bytes of the slide file hashed for the provenance checksum.
HEAD_BYTES = 1 << 20


@dataclass
class SegmentResult:
    """What one :func:`segment_slide` run did.

    ``mpp``: analysis resolution (um/px of the tiles the model saw); ``output_mpp``: um/px of the output's
    level 0, ``width, height`` its size in pixels; ``n_tiles``: tiles analysed (tissue) out of
    ``n_tiles_total`` in the grid; ``n_predicted``: tiles this run sent to the model (fewer than ``n_tiles``
    when it resumed); ``timings``: seconds per stage (see :class:`~wsiseg.infer.pipeline.StageTimes`).
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
    resumed: bool
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        rate = self.n_predicted / self.timings["wall"] if self.timings.get("wall") else 0.0
        resumed = ", resumed" if self.resumed else ""
        return (f"{self.slide.name}: {self.n_tiles}/{self.n_tiles_total} tiles at {self.mpp:g} um/px, "
                f"output {self.width}x{self.height} px at {self.output_mpp:g} um/px "
                f"in {self.timings.get('wall', 0.0):.1f} s "
                f"({rate:.1f} tiles/s{resumed}) -> {self.out}")


def sha256_head(path: Path, n_bytes: int = HEAD_BYTES) -> str:
    """SHA-256 of the first ``n_bytes`` of a file (a cheap identity check for multi-GB slides)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(n_bytes))
    return h.hexdigest()


def preview_path(out: Path) -> Path:
    """Where the preview PNG of output ``out`` goes: ``slide.zarr`` -> ``slide.preview.png`` beside it."""
    return out.with_name(out.stem + ".preview.png")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _is_store(path: Path) -> bool:
    return any((path / name).exists() for name in (".zgroup", ".zattrs", "zarr.json"))


def _existing_attrs(path: Path) -> dict[str, Any]:
    for name in (".zattrs", "zarr.json"):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        attrs = data.get("attributes", data) if name == "zarr.json" else data
        info = attrs.get("wsiseg", {}) if isinstance(attrs, dict) else {}
        return info if isinstance(info, dict) else {}
    return {}


def _remove_output(out: Path) -> None:
    if out.is_dir() and not _is_store(out) and any(out.iterdir()):
        raise OutputError(f"{out} exists and is not a zarr store; refusing to delete it, "
                          "choose another --out")
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()


def _load_mask(mask: Any, slide: Any) -> Any:
    """A user ROI (GeoJSON, or a mask image) as a :class:`wsiseg.slide.TissueMask`."""
    from wsiseg.slide import TissueMask, tissue_mask_from_image

    if isinstance(mask, TissueMask):
        return mask
    path = Path(mask)
    if not path.is_file():
        raise ConfigError(f"mask file not found: {path}")
    if path.name.lower().endswith((".geojson", ".json", ".geojson.gz")):
        from wsiseg.export import geojson_to_mask  # type: ignore[attr-defined,unused-ignore]

        w0, h0 = slide.dimensions
        downsample = max(1.0, max(w0, h0) / 4096.0)
        arr = geojson_to_mask(path, int(np.ceil(w0 / downsample)), int(np.ceil(h0 / downsample)), downsample)
        return TissueMask(arr, slide.mpp[0] * downsample, slide.mpp)
    return tissue_mask_from_image(path, slide)


def output_stride_for(mpp: float, output_mpp: float | None, native_stride: int, tile_size: int,
                      overlap: int) -> int:
    """Analysis pixels per output pixel: ``output_mpp / mpp`` (a whole number), or the model's
    ``native_stride`` when ``output_mpp`` is None. It must divide ``tile_size`` and ``overlap`` (pixels at
    ``mpp``) so that tiles and their overlaps fall on whole output pixels; raises :class:`ConfigError`."""
    if output_mpp is None:
        stride, source = max(1, int(native_stride)), "the model's output grid"
    else:
        ratio = float(output_mpp) / float(mpp)
        stride = round(ratio)
        if not (math.isfinite(ratio) and stride >= 1 and abs(ratio - stride) <= 1e-6 * ratio):
            raise ConfigError(f"--output-mpp must be a whole multiple of --mpp ({mpp:g} um/px), "
                              f"got {output_mpp:g}")
        source = "--output-mpp"
    if tile_size % stride or overlap % stride:
        raise ConfigError(f"{source} ({stride} analysis pixels per output pixel) must divide the tile size "
                          f"({tile_size}) and the overlap ({overlap}); change --overlap or --output-mpp")
    return stride


def segment_slide(slide_path: str | Path, model: Predictor, out: str | Path, *, mpp: float | None = None,
                  tile_size: int | None = None, overlap: int | None = None, batch_size: int = 4,
                  read_workers: int | None = None, tissue: bool = True, mask: Any = None,
                  overwrite: bool = False, progress: bool = True, slide_mpp: float | None = None,
                  ngff_version: NgffVersion | str = NgffVersion.V04, chunk_size: int = 1024,
                  blend: BlendWindow | str = BlendWindow.COSINE, min_tissue_fraction: float = 0.0,
                  preview: bool = True, write_workers: int | None = None,
                  output_mpp: float | None = None, checkpoint_s: float = 1.0) -> SegmentResult:
    """Segment one slide into an OME-Zarr at ``out`` (see :mod:`wsiseg.infer.omezarr` for the layout).

    Args:
        slide_path: any slide :func:`wsiseg.slide.open_slide` reads.
        model: a :class:`~wsiseg.predictor.Predictor`.
        out: the ``.zarr`` directory to write; a finished one raises :class:`OutputExistsError` unless
            ``overwrite``; an unfinished one from the same slide/model/parameters is resumed.
        mpp: analysis resolution in um/px (default: the model's); tile_size: tile side in pixels at
            ``mpp`` (default: the model's); overlap: pixels shared by neighbouring tiles (default
            ``tile_size // 8``, at most ``tile_size // 2``).
        output_mpp: um/px of the output's level 0, a whole multiple of ``mpp`` (default: the model's own
            output grid, ``mpp * model.output_stride``: 4x ``mpp`` for SAM-Path, whose logits are 1/4 of
            the tile; pass ``output_mpp=mpp`` for the tile resolution, at 16x the stitching and writing work).
        batch_size: tiles per model call; read_workers: threads reading tiles (default
            ``min(8, cpus)``); write_workers: threads finalising chunks (normalise, quantise, pyramid,
            compress, write; default ``min(4, max(2, cpus // 4))``). None of the three changes the output.
        tissue: skip tiles without tissue (detected on a thumbnail); mask: a user ROI (GeoJSON or mask
            image) replacing tissue detection. Skipped area is "not analysed": label 0, probabilities 0.
        slide_mpp: level-0 um/px for slides that record none.
        ngff_version: "0.4" (zarr v2) or "0.5" (zarr v3); chunk_size: level-0 zarr chunk (power of two).
        blend: weight window for overlapping tiles; min_tissue_fraction: tissue needed to keep a tile.
        preview: write ``<out stem>.preview.png`` beside the output.
        checkpoint_s: seconds between resume checkpoints (0: after every batch). A run killed with
            ``kill -9`` redoes only the tiles stitched since its last checkpoint; a run stopped by an error
            or Ctrl-C checkpoints everything it stitched before it ends. Does not change the output.
    """
    from wsiseg.slide import detect_tissue, make_tile_grid, open_slide

    tame_malloc()
    started, t_start = _now(), time.perf_counter()
    slide_path, out = Path(slide_path), Path(out)
    version = NgffVersion(ngff_version)
    blend = BlendWindow(blend)
    cpus = os.cpu_count() or 2
    read_workers = min(8, cpus) if read_workers is None else read_workers
    write_workers = min(4, max(2, cpus // 4)) if write_workers is None else write_workers
    if batch_size < 1 or read_workers < 1 or write_workers < 1:
        raise ConfigError("--batch-size, --read-workers and --write-workers must be at least 1")
    mpp = mpp if mpp is not None else model.mpp
    if mpp is None:
        raise ConfigError("the model records no resolution; pass --mpp (microns per pixel to analyse at)")
    tile_size = tile_size if tile_size is not None else model.tile_size
    overlap = overlap if overlap is not None else tile_size // 8
    if not 0 <= overlap <= tile_size // 2:
        raise ConfigError(f"--overlap must be between 0 and half the tile size ({tile_size // 2}), "
                          f"got {overlap}")
    stride = output_stride_for(mpp, output_mpp, getattr(model, "output_stride", 1), tile_size, overlap)
    out_mpp, out_tile = float(mpp) * stride, tile_size // stride

    with open_slide(slide_path, mpp=slide_mpp) as slide:  # its MissingMppError names --slide-mpp
        w0, h0 = slide.dimensions
        slide_info = {"path": str(slide_path.resolve()), "width0": w0, "height0": h0,
                      "mpp": list(slide.mpp), "vendor": slide.vendor}
        try:
            slide_info["sha256_head"] = sha256_head(slide_path) if slide_path.is_file() else None
        except OSError as exc:
            raise SlideError(f"cannot read {slide_path}: {exc}") from exc
        params = {"mpp": float(mpp), "output_mpp": out_mpp, "tile_size": int(tile_size),
                  "overlap": int(overlap), "chunk_size": int(chunk_size), "tissue": bool(tissue),
                  "blend": blend.value,
                  "mask": None if mask is None else str(mask) if isinstance(mask, (str, Path))
                  else type(mask).__name__,
                  "min_tissue_fraction": float(min_tissue_fraction),
                  "ngff_version": version.value}
        provenance = model.provenance()
        # -- tiles --------------------------------------------------------------------------------------
        roi = _load_mask(mask, slide) if mask is not None else (detect_tissue(slide) if tissue else None)
        grid = make_tile_grid(slide, mpp, tile_size, overlap, tissue=roi,
                              min_tissue_fraction=min_tissue_fraction)
        # what must not change for a run to resume: slide, model, parameters, wsiseg and the tile set
        tile_set = hashlib.sha256(np.array([t.index for t in grid.tiles], np.int64).tobytes()).hexdigest()
        fingerprint = json.loads(json.dumps({"slide": slide_info, "model": provenance, "params": params,
                                             "version": __version__, "tiles_sha256": tile_set}))

        # -- the output: new, resumed, or refused ------------------------------------------------------
        journal = Journal(out)
        state: dict[str, Any] | None = None
        if out.exists():
            info = _existing_attrs(out)
            previous = journal.load()
            if info.get("finished") and not overwrite:
                journal.remove()  # a run killed between marking the output finished and removing it
                raise OutputExistsError(f"{out} is a finished segmentation; pass --overwrite to replace it")
            if not overwrite and previous is not None and previous.get("fingerprint") != fingerprint:
                raise OutputError(f"{out} holds an unfinished run with other settings (slide, model or "
                                  "parameters); pass --overwrite to start again")
            # a wsiseg store without a journal was killed before its first commit: start it again
            restartable = bool(info) or not (out.is_dir() and any(out.iterdir()))
            if not overwrite and previous is None and not restartable:
                raise OutputError(f"{out} exists and is not a resumable wsiseg run; pass --overwrite "
                                  "or choose another --out")
            if overwrite or previous is None:
                _remove_output(out)
            else:
                state = previous["stitcher"]
        out.parent.mkdir(parents=True, exist_ok=True)

        # stitching and output happen on the output grid: ``stride`` analysis pixels per output pixel
        width_o, height_o = -(-grid.width_t // stride), -(-grid.height_t // stride)
        layout = Layout(width_o, height_o, out_tile, overlap // stride, grid.n_cols, grid.n_rows, chunk_size)
        k = len(model.classes)
        writer = SegmentationWriter(out, width_t=width_o, height_t=height_o, mpp=out_mpp,
                                    classes=model.classes, chunk_size=chunk_size, version=version,
                                    create=state is None)
        base_attrs: dict[str, Any] = {
            "version": __version__, "slide": slide_info, "model": provenance, "params": params,
            "classes": model.classes.to_dict(), "mpp": out_mpp, "analysis_mpp": float(mpp),
            "started": started, "finished": None,
            "tiles": {"analysed": len(grid.tiles), "total": grid.n_total},
            "not_analysed": "label 0 and probability 0 in every channel (outside tissue / ROI)",
        }
        previous_timings = (journal.load() or {}).get("timings", {}) if state is not None else {}
        writer.set_provenance(base_attrs)
        stitcher = Stitcher(layout, k, blend_window(out_tile, overlap // stride, blend), journal.dir,
                            state=state)
        if state is None:
            journal.commit({"fingerprint": fingerprint, "stitcher": stitcher.save_state(), "timings": {}})
        remaining = [t for t in grid.tiles if t.index >= stitcher.cursor]
        times = StageTimes()

        write_pool = ThreadPoolExecutor(max(1, write_workers), thread_name_prefix="wsiseg-write")

        def write_one(chunk: FinishedChunk) -> None:
            t0 = time.perf_counter()
            probs = chunk.get()  # a spilled chunk is read back only now
            if probs is not None:
                writer.write_chunk(chunk.box, probs)
                stitcher.release(chunk)  # its buffer serves a later chunk (no fresh pages)
            times.add("write", time.perf_counter() - t0)

        # at most this many finished chunks wait for the writers: memory stays bounded when they lag
        max_queued = 2 * max(1, write_workers)
        queued: list[Future[None]] = []

        def write(chunks: list[FinishedChunk]) -> list[Future[None]]:
            futures = []
            for ch in chunks:
                if ch.empty:
                    continue
                while len(queued) >= max_queued:
                    queued.pop(0).result()
                futures.append(write_pool.submit(write_one, ch))
                queued.append(futures[-1])
            queued[:] = [f for f in queued if not f.done()]
            return futures

        # Saved stitcher states whose chunks are being written; the journal commits a state only once all
        # chunks finished before it are on disk. One stays in flight so stitching overlaps with writing.
        in_flight: list[tuple[list[Future[None]], dict[str, Any]]] = []
        pending: list[Future[None]] = []  # chunk writes since the last saved state
        unsaved = [0]  # tiles stitched since the last saved state
        last_save = [time.perf_counter()]

        write_failed: list[BaseException] = []

        def checkpoint() -> None:
            """Save the stitcher state (everything stitched so far) for commit once its chunks are written."""
            in_flight.append((list(pending), stitcher.save_state()))
            pending.clear()
            unsaved[0] = 0
            last_save[0] = time.perf_counter()

        def commit_oldest() -> None:
            futures, st = in_flight.pop(0)
            if write_failed:  # a later state must never be committed over chunks that were not written
                return
            try:
                for fut in futures:
                    fut.result()  # the first write error is raised here, before the journal moves on
            except BaseException as exc:
                write_failed.append(exc)
                raise
            t0 = time.perf_counter()
            journal.commit({"fingerprint": fingerprint, "stitcher": st, "timings": times.as_dict()})
            stitcher.collect_garbage(st)
            times.add("journal", time.perf_counter() - t0)

        bar = tqdm(total=len(grid.tiles), initial=len(grid.tiles) - len(remaining), unit="tile",
                   desc=slide_path.name, disable=not progress, file=sys.stderr, dynamic_ncols=True,
                   leave=True)

        def consume(batch: list[Any], probs: np.ndarray) -> None:
            finished: list[FinishedChunk] = []
            t0 = time.perf_counter()
            for tile, p in zip(batch, probs, strict=True):
                finished.extend(stitcher.add(tile.row, tile.col, p))
            pending.extend(write(finished))
            unsaved[0] += len(batch)
            if time.perf_counter() - last_save[0] >= checkpoint_s:
                checkpoint()
            times.add("stitch", time.perf_counter() - t0)
            bar.update(len(batch))
            while len(in_flight) > 1:
                commit_oldest()

        def read(tile: Any, out: np.ndarray) -> None:
            slide.read_region(tile.x0, tile.y0, tile_size, tile_size, mpp, out=out)

        def predict(tiles: np.ndarray) -> np.ndarray:
            probs = model.predict(tiles, out_tile)
            if probs.shape != (tiles.shape[0], k, out_tile, out_tile):
                raise ConfigError(f"model returned probabilities of shape {probs.shape}, expected "
                                  f"({tiles.shape[0]}, {k}, {out_tile}, {out_tile})")
            return probs

        try:
            try:
                run_pipeline(remaining, read, predict, consume, tile_shape=(tile_size, tile_size, 3),
                             batch_size=batch_size,
                             read_workers=read_workers, times=times)
            finally:
                if unsaved[0] and not write_failed:
                    checkpoint()
                while in_flight:  # everything predicted and stitched is written and committed
                    commit_oldest()
            t0 = time.perf_counter()
            rest = stitcher.finish()
            times.add("stitch", time.perf_counter() - t0)
            for fut in write(rest):
                fut.result()
        finally:
            bar.close()
            write_pool.shutdown(wait=True)
        png: Path | None = None
        if preview:  # before the output is marked finished: a run killed here redoes only the preview
            from wsiseg.infer.preview import write_preview

            png = write_preview(out, slide, preview_path(out))
        times.wall = time.perf_counter() - t_start
        timings = times.as_dict()
        if previous_timings:
            timings["previous_runs"] = previous_timings  # type: ignore[assignment]
        writer.set_provenance({**base_attrs, "timings": timings, "finished": _now(),
                               "resumed": state is not None})
        journal.remove()
    return SegmentResult(slide_path, out, png, float(mpp), out_mpp, width_o, height_o, len(grid.tiles),
                         grid.n_total, len(remaining), state is not None, timings)


__all__ = ["WORK_DIR", "SegmentResult", "output_stride_for", "preview_path", "segment_slide", "sha256_head"]
