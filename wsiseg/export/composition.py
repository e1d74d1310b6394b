"""Tissue composition of a segmentation: per-class area (um^2, mm^2) and share of the analysed area, and
the cohort table (one row per slide) that ``wsiseg segment`` writes for a folder of slides.

Areas come from the exact level-0 labels of the output, read chunk by chunk (memory: one chunk). A label
pixel covers ``mpp x mpp`` um^2, except in the last column and row, where the output grid (rounded up)
reaches past the slide: there only the part inside the slide counts, so the areas add up to at most the
slide's own area. "Not analysed" pixels (label 0) are not counted.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsiseg.errors import OutputError, WsisegError, one_line
from wsiseg.frames import edge_weights
from wsiseg.io.atomic import write_text

if TYPE_CHECKING:
    from wsiseg.io.omezarr import Segmentation

#: The cohort table's file name in an output folder.
SUMMARY_FILE = "summary.csv"


@dataclass(frozen=True)
class Composition:
    """Per-class areas of one segmentation (``areas_um2[i]``: class ``i`` of ``class_names``)."""

    class_names: tuple[str, ...]
    areas_um2: tuple[float, ...]

    @property
    def analysed_um2(self) -> float:
        return float(sum(self.areas_um2))

    def share(self, i: int) -> float:
        """Class ``i``'s share of the analysed area (0..1; 0 when nothing was analysed)."""
        total = self.analysed_um2
        return self.areas_um2[i] / total if total > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """What the output's metadata records (``wsiseg.composition``)."""
        return {
            "analysed_um2": self.analysed_um2, "analysed_mm2": self.analysed_um2 / 1e6,
            "classes": {name: {"area_um2": a, "area_mm2": a / 1e6, "share": self.share(i)}
                        for i, (name, a) in enumerate(zip(self.class_names, self.areas_um2, strict=True))},
            "note": "areas of the level-0 labels (pixels at the slide's edge count only inside the slide); "
                    "share = of the analysed area",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Composition:
        classes = data["classes"]
        return cls(tuple(classes), tuple(float(v["area_um2"]) for v in classes.values()))


def composition(seg: Segmentation) -> Composition:
    """The tissue composition of ``seg`` from its level-0 labels (see the module docstring)."""
    labels = seg.labels[0]
    height, width = int(labels.shape[0]), int(labels.shape[1])
    mpp = seg.mpp[0]
    slide = seg.metadata.slide
    if slide.width0 is not None and slide.height0 is not None:
        width_um, height_um = slide.width0 * slide.mpp[0], slide.height0 * slide.mpp[1]
    else:
        width_um, height_um = width * mpp, height * mpp
    wx, wy = np.array(edge_weights(width, mpp, width_um)), np.array(edge_weights(height, mpp, height_um))
    k = len(seg.classes)
    totals = np.zeros(k + 1, np.float64)
    step = 1024
    for y in range(0, height, step):
        for x in range(0, width, step):
            block = np.asarray(labels[y:y + step, x:x + step]).astype(np.int64)
            weights = np.outer(wy[y:y + block.shape[0]], wx[x:x + block.shape[1]])
            totals += np.bincount(block.ravel(), weights=weights.ravel(), minlength=k + 1)[:k + 1]
    return Composition(tuple(seg.classes.names), tuple(float(v) for v in totals[1:]))


@dataclass(frozen=True)
class SummaryRow:
    """One slide of the cohort table."""

    slide: str
    status: str  # done, resumed, skipped or failed
    composition: Composition | None = None
    model: str = ""
    version: str = ""
    error: str = ""
    #: QC artifact areas (um^2) by artifact name (``pen``, ``blur``, ...), when the run did QC
    excluded_um2: dict[str, float] | None = None
    #: whether those artifacts were left out of the analysis (``--qc default``) or only reported
    qc_mode: str = ""
    #: objects per class (:mod:`wsiseg.export.objects`), when the run exported objects
    objects: dict[str, int] | None = None


def summary_csv(rows: Sequence[SummaryRow]) -> str:
    """The cohort table as CSV text: slide, status, analysed area (mm^2), then per class (the union of the
    rows' classes, in first-seen order) its area (mm^2) and share of the analysed area, then, when any
    row did QC, the QC mode and the area of each artifact (``excluded_pen_mm2``, ...: left out of the
    analysis under ``--qc default``, only measured under ``report``), then, when any row exported objects,
    per object class the count and the density (``objects_<class>``, ``objects_<class>_per_mm2``: per mm^2
    of analysed tissue), model, version."""
    classes: list[str] = []
    artifacts: list[str] = []
    object_classes: list[str] = []
    for row in rows:
        for name in row.objects or {}:
            if name not in object_classes:
                object_classes.append(name)
        for name in row.composition.class_names if row.composition else ():
            if name not in classes:
                classes.append(name)
        for name in row.excluded_um2 or {}:
            if name not in artifacts:
                artifacts.append(name)
    header = ["slide", "status", "analysed_mm2"]
    for name in classes:
        header += [f"{name}_mm2", f"{name}_share"]
    if artifacts:
        header += ["qc", *(f"excluded_{name}_mm2" for name in artifacts)]
    for name in object_classes:
        header += [f"objects_{name}", f"objects_{name}_per_mm2"]
    header += ["model", "wsiseg_version", "error"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        values: list[str] = [row.slide, row.status]
        comp = row.composition
        if comp is None:
            values += [""] * (1 + 2 * len(classes))
        else:
            values.append(_number(comp.analysed_um2 / 1e6))
            index = {name: i for i, name in enumerate(comp.class_names)}
            for name in classes:
                i = index.get(name)
                if i is None:
                    values += ["", ""]
                else:
                    values += [_number(comp.areas_um2[i] / 1e6), _number(comp.share(i))]
        if artifacts:
            excluded = row.excluded_um2 or {}
            values.append(row.qc_mode)
            values += [_number(excluded[name] / 1e6) if name in excluded else "" for name in artifacts]
        values += _object_values(row, object_classes)
        values += [row.model, row.version, row.error]
        writer.writerow(values)
    return buffer.getvalue()


def _object_values(row: SummaryRow, object_classes: list[str]) -> list[str]:
    """Count and density (per mm^2 of analysed tissue) of each object class; blank where not exported."""
    values: list[str] = []
    analysed_mm2 = row.composition.analysed_um2 / 1e6 if row.composition is not None else 0.0
    for name in object_classes:
        if row.objects is None or name not in row.objects:
            values += ["", ""]
            continue
        count = row.objects[name]
        values += [str(count), _number(count / analysed_mm2) if analysed_mm2 > 0 else ""]
    return values


def _number(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else ""


def write_summary(rows: Sequence[SummaryRow], path: Path) -> Path:
    """Write :func:`summary_csv` of ``rows`` to ``path`` atomically."""
    try:
        write_text(path, summary_csv(rows))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def row_of(zarr_path: Path, status: str = "done") -> SummaryRow:
    """The cohort-table row of a finished segmentation (its recorded composition, or computed now)."""
    from wsiseg.io.omezarr import open_segmentation

    seg = open_segmentation(zarr_path)
    meta = seg.metadata
    comp = Composition.from_dict(meta.composition) if meta.composition is not None else composition(seg)
    slide_name = meta.slide.name or Path(zarr_path).name
    return SummaryRow(slide_name, status, comp, meta.model_name, meta.version,
                      excluded_um2=meta.artifact_areas_um2(), qc_mode=meta.qc_mode)


def rebuild_summary(folder: Path) -> tuple[Path, int]:
    """Rebuild ``folder/summary.csv`` from the segmentations (``*.zarr``) in ``folder``: finished ones
    with status ``done``, unfinished ones with status ``unfinished`` and no areas. Returns the file and
    the number of rows. Raises OutputError when ``folder`` holds no segmentation."""
    from wsiseg.io.omezarr import open_segmentation

    zarrs = sorted(p for p in Path(folder).glob("*.zarr") if p.is_dir())
    if not zarrs:
        raise OutputError(f"no segmentations (*.zarr) in {folder}")
    rows = []
    for path in zarrs:
        try:
            seg = open_segmentation(path)
        except WsisegError as exc:
            rows.append(SummaryRow(path.stem, "unreadable", error=one_line(exc)))
            continue
        if not seg.finished:
            rows.append(SummaryRow(path.stem, "unfinished"))
        else:
            rows.append(row_of(path, "resumed" if seg.metadata.resumed else "done"))
    return write_summary(rows, Path(folder) / SUMMARY_FILE), len(rows)
