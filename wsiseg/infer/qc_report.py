"""``wsiseg qc``: quality control of a cohort without segmenting it.

Per slide, in the output folder: ``<slide>.qc.png`` (the thumbnail with artifacts hatched in their colours),
``<slide>.qc-labels.png`` (the QC label image, one byte per pixel, at the thumbnail's resolution) with
``<slide>.qc-labels.json`` beside it (its mpp and the name of every label value), and
``<slide>.qc.geojson`` (the artifacts as QuPath annotations ``Artifact: pen``, ``Artifact: blur``, to review
and edit; ``segment --mask`` takes the edited file back). For the cohort: ``qc.csv``, one row per slide
(tissue, analysable and excluded areas in mm^2, the excluded share, warnings).

Pen ink is found on the thumbnail (seconds per slide); blur needs the tissue read at the analysis
resolution (``blur_mpp``, tiles of ``tile_size``; never finer than the slide's level 0, since enlarged
tiles look blurred), which reads the slide like a segmentation would; pass ``blur=False`` to skip it.
Plain PNG/JPEG images work as one-level slides given ``slide_mpp``.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from wsiseg.errors import OutputError, WsisegError, one_line
from wsiseg.frames import edge_weights
from wsiseg.infer.quality import label_values
from wsiseg.io.atomic import replacing, write_text
from wsiseg.qc import FocusGrid, QCAreas, QCLabel, QCMap, QCSettings, assess_slide, block_size
from wsiseg.slide import Slide, make_tile_grid, open_slide
from wsiseg.tiling import Tiling

#: The cohort table's file name.
QC_TABLE = "qc.csv"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass(frozen=True)
class QCRow:
    """One slide of the QC table (``areas`` None when it failed)."""

    slide: str
    areas: QCAreas | None
    warning: str = ""
    error: str = ""


def assess_slides(slides: Sequence[Path], out: Path, settings: QCSettings | None = None, *, blur: bool = True,
                  blur_mpp: float = 0.5, tile_size: int = 1024, slide_mpp: float | None = None,
                  read_workers: int = 4, progress: bool = True,
                  report: Callable[[str], None] = _stderr) -> list[QCRow]:
    """QC every slide into ``out`` (created) and write the cohort table ``out/qc.csv`` (see the module
    docstring). A slide that fails (unreadable, no mpp) gets a row with its error; the others go on. Error
    and warning lines go to ``report`` (default: stderr)."""
    settings = settings or QCSettings()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out}: {exc.strerror or exc}") from exc
    rows = []
    for path in slides:
        try:
            rows.append(_assess_one(path, out, settings, blur, blur_mpp, tile_size, slide_mpp, read_workers,
                                    progress))
        except WsisegError as exc:
            rows.append(QCRow(path.name, None, error=one_line(exc)))
            report(f"wsiseg: error: {path.name}: {one_line(exc)}")
            continue
        if rows[-1].warning:
            report(f"wsiseg: warning: {path.name}: {rows[-1].warning}")
    write_text(out / QC_TABLE, qc_table(rows))
    return rows


def _assess_one(path: Path, out: Path, settings: QCSettings, blur: bool, blur_mpp: float, tile_size: int,
                slide_mpp: float | None, read_workers: int, progress: bool) -> QCRow:
    with open_slide(path, mpp=slide_mpp) as slide:
        qc_map, thumb = assess_slide(slide, settings)
        focus, analysis_mpp = None, None
        blur_mpp = max(blur_mpp, min(slide.mpp))  # enlarged tiles look blurred: judge at level 0 at finest
        if blur and settings.blur.enabled:
            focus, analysis_mpp = _measure_blur(slide, qc_map, settings, blur_mpp, tile_size, read_workers,
                                                progress, path.name)
        h, w = qc_map.labels.shape
        labels = qc_map.labels_on(0, h, 0, w, qc_map.mpp, focus=focus, analysis_mpp=analysis_mpp)
        extent = (slide.dimensions[0] * slide.mpp[0], slide.dimensions[1] * slide.mpp[1])
        areas = QCAreas.count(labels, np.array(edge_weights(h, qc_map.mpp, extent[1])),
                              np.array(edge_weights(w, qc_map.mpp, extent[0])))
        stem = path.name if path.suffix.lower() != ".mrxs" else path.stem
        stem = Path(stem).stem
        _write_label_image(out / f"{stem}.qc-labels.png", labels, qc_map, slide)
        _write_overlay(out / f"{stem}.qc.png", thumb, labels)
        _write_geojson(out / f"{stem}.qc.geojson", labels, qc_map, slide, path)
    warning = ""
    if areas.tissue_um2 > 0 and areas.excluded_share > settings.warn_excluded_share:
        warning = f"artifacts cover {areas.excluded_share:.0%} of the tissue"
    return QCRow(path.name, areas, warning)


def _measure_blur(slide: Slide, qc_map: QCMap, settings: QCSettings, mpp: float, tile_size: int,
                  workers: int, progress: bool, name: str) -> tuple[FocusGrid, float]:
    """Read every tile of analysable tissue at ``mpp`` and measure its focus."""
    tiling = Tiling.create(mpp, tile_size)
    grid = make_tile_grid(slide, tiling, tissue=qc_map.analysable_mask())
    focus = FocusGrid(block_size(tiling.step, mpp, settings.blur.block_um), tiling.step, tile_size,
                      grid.n_cols, grid.n_rows, settings.blur)

    def measure(tile: Any) -> None:
        pixels = slide.read_region(tile.x0, tile.y0, tile_size, tile_size, mpp)
        focus.measure(tile.col, tile.row, pixels)

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="wsiseg-qc") as pool:
        for _ in tqdm(pool.map(measure, grid.tiles), total=len(grid.tiles), desc=f"{name} blur", unit="tile",
                      disable=not progress, file=sys.stderr, leave=False):
            pass
    return focus, mpp


def _write_label_image(png: Path, labels: np.ndarray, qc_map: QCMap, slide: Slide) -> None:
    """The label image as an 8-bit PNG and, beside it, a JSON naming its values and giving its geometry."""
    with replacing(png) as tmp:
        Image.fromarray(labels).save(tmp, format="PNG")
    meta = {"image": png.name, "mpp": qc_map.mpp, "slide_mpp": list(slide.mpp),
            "slide_size_level0": list(slide.dimensions),
            "note": "pixel (row, col) covers level-0 pixels from (col, row) * mpp / slide_mpp",
            "labels": {str(int(label)): label.title for label in QCLabel},
            "excluded": [label.title for label in QCLabel if label.excluded],
            "colours": {label.title: list(label.rgba) for label in QCLabel}}
    write_text(png.with_name(png.name[:-len(".png")] + ".json"), json.dumps(meta, indent=1) + "\n")


def _write_overlay(png: Path, thumb: np.ndarray, labels: np.ndarray) -> None:
    """The thumbnail with tissue outlined faintly and artifacts tinted and hatched in their colours."""
    image = thumb.astype(np.float32)
    stripes = (np.add.outer(np.arange(labels.shape[0]), np.arange(labels.shape[1])) % 8) < 3
    for label in QCLabel:
        if not label.excluded:
            continue
        where = labels == label
        colour = np.array(label.rgba[:3], np.float32)
        image[where] = 0.6 * image[where] + 0.4 * colour
        image[where & stripes] = colour
    with replacing(png) as tmp:
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(tmp, format="PNG")


def _write_geojson(path: Path, labels: np.ndarray, qc_map: QCMap, slide: Slide, slide_path: Path) -> None:
    """The artifacts of the label image as QuPath annotations (QuPath's frame, clipped to the slide)."""
    from wsiseg.export import LabelSource, export_label_source, label_image_classes

    classes, names = label_image_classes("qc", label_values())
    source = LabelSource(
        labels=labels, probabilities=None, classes=classes, level=0, n_levels=1, mpp_x=qc_map.mpp,
        mpp_y=qc_map.mpp, downsample_x=qc_map.mpp / slide.mpp[0], downsample_y=qc_map.mpp / slide.mpp[1],
        slide_id=slide_path.name, run_key="qc", width0=slide.dimensions[0], height0=slide.dimensions[1],
        bounds=slide.bounds, label_image="qc", qupath_names=names)
    export_label_source(source, path)


def qc_table(rows: Sequence[QCRow]) -> str:
    """The cohort table as CSV: slide, tissue, analysable and per-artifact areas (mm^2), the excluded share
    of the tissue, warning, error."""
    artifacts = [label.title for label in QCLabel if label.excluded]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["slide", "tissue_mm2", "analysable_mm2", *(f"{a}_mm2" for a in artifacts),
                     "excluded_share", "warning", "error"])
    for row in rows:
        if row.areas is None:
            writer.writerow([row.slide, *[""] * (3 + len(artifacts)), row.warning, row.error])
            continue
        a = row.areas
        writer.writerow([row.slide, f"{a.tissue_um2 / 1e6:.6g}", f"{a.analysable_um2 / 1e6:.6g}",
                         *(f"{a.areas_um2.get(name, 0.0) / 1e6:.6g}" for name in artifacts),
                         f"{a.excluded_share:.4g}", row.warning, row.error])
    return buffer.getvalue()
