"""Side-by-side table of evaluation reports (``wsiseg evaluate --json`` files): SAM, SAM + post-processing,
SAM segment-everything and the SAM-Path variants, as Markdown and JSON. Reads JSON only (no torch).

Columns: method, data set, images, micro Dice/IoU (the paper's definition for BCSS), macro Dice/IoU, the
paper's exact metrics (the report's ``paper`` block, e.g. CRAG's binary gland Dice and its "IoU") when a
report has them, seconds per image, and notes (e.g. that segment-everything's numbers are not class
metrics). Rows keep the order of the files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wsiseg.errors import DatasetError, OutputError


@dataclass(frozen=True)
class Row:
    """One report in the table; scores are None where the report has none."""

    method: str
    dataset: str
    images: int | None
    micro_dice: float | None
    micro_iou: float | None
    macro_dice: float | None
    macro_iou: float | None
    paper_dice: float | None
    paper_iou: float | None
    seconds_per_image: float | None
    class_metrics: bool
    notes: str
    source: str


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(float(value)) else float(value)


def _block(report: dict[str, Any], key: str) -> dict[str, Any]:
    """``report[key]`` when it is a dict (e.g. ``paper``, absent from older reports), else ``{}``."""
    value = report.get(key)
    return value if isinstance(value, dict) else {}


def method_label(report: dict[str, Any]) -> str:
    """A row name: the baseline's label, else SAM-Path's variant and encoders from the model provenance."""
    method = report.get("method")
    if isinstance(method, dict) and method.get("label"):
        return str(method["label"])
    model = report.get("model") or {}
    config = model.get("config") or {}
    if isinstance(config, dict) and config:
        variant = str(config.get("variant", "SAM-Path"))
        encoders = "+".join(str(config[k]) for k in ("sam", "hipt") if config.get(k))
        return f"{model.get('model', 'SamPath')} ({variant}{', ' + encoders if encoders else ''})"
    return str(model.get("model", "unknown model"))


def read_row(path: Path | str, label: str | None = None) -> Row:
    """One table row from a report JSON file; :class:`DatasetError` when it is not a wsiseg report."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not JSON: {exc.msg} (line {exc.lineno})") from exc
    if not isinstance(report, dict) or "micro_dice" not in report or "seconds_per_image" not in report:
        raise DatasetError(f"{path} is not a wsiseg evaluation report (written by "
                           "`wsiseg evaluate --json FILE`)")
    method = _block(report, "method")
    data = _block(report, "dataset")
    paper = _block(report, "paper")
    class_metrics = bool(method.get("class_metrics_apply", True))
    notes: list[str] = []
    if not class_metrics:
        notes.append("not class metrics: union of all masks vs the object class")
    if method.get("post_process"):
        notes.append("masks > 1/2 image dropped")
    inst = _block(report, "instances")
    if _num(inst.get("mean_instance_iou")) is not None:
        notes.append(f"instance IoU {inst['mean_instance_iou']:.3f}")
    if _num(inst.get("mean_best_iou")) is not None:
        notes.append(f"best-match IoU {inst['mean_best_iou']:.3f}, "
                     f"{_num(inst.get('masks_per_image')) or 0:.1f} masks/image")
    if paper.get("note"):
        notes.append(f"paper: {paper['note']}")
    return Row(
        method=label or method_label(report),
        dataset=f"{data.get('name', '?')}/{data.get('split') or '?'}",
        images=int(report["images"]) if isinstance(report.get("images"), int) else None,
        micro_dice=_num(report.get("micro_dice")),
        micro_iou=_num(report.get("micro_iou")),
        macro_dice=_num(report.get("macro_dice")),
        macro_iou=_num(report.get("macro_iou")),
        paper_dice=_num(paper.get("dice")),
        paper_iou=_num(paper.get("iou")),
        seconds_per_image=_num(report.get("seconds_per_image")),
        class_metrics=class_metrics,
        notes="; ".join(notes),
        source=str(path),
    )


def compare(paths: Sequence[Path | str], labels: Sequence[str] | None = None) -> list[Row]:
    """Rows for report files ``paths`` (``labels`` override the method names, in order)."""
    if not paths:
        raise DatasetError("give at least one report JSON file")
    if labels and len(labels) != len(paths):
        raise DatasetError(f"{len(labels)} label(s) for {len(paths)} report(s); give one label per report")
    return [read_row(p, labels[i] if labels else None) for i, p in enumerate(paths)]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def to_markdown(rows: list[Row]) -> str:
    """A Markdown table; the paper-metric columns only when some report has them."""
    paper = any(r.paper_dice is not None or r.paper_iou is not None for r in rows)
    head = ["method", "data", "images", "Dice (micro)", "IoU (micro)", "Dice (macro)", "IoU (macro)"]
    if paper:
        head += ["Dice (paper)", "IoU (paper)"]
    head += ["s/image", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mark = "" if r.class_metrics else " *"
        cells = [r.method.replace("|", "/") + mark, r.dataset, str(r.images or "?"),
                 _fmt(r.micro_dice), _fmt(r.micro_iou), _fmt(r.macro_dice), _fmt(r.macro_iou)]
        if paper:
            cells += [_fmt(r.paper_dice), _fmt(r.paper_iou)]
        cells += [_fmt(r.seconds_per_image, 3), r.notes.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "micro = over all labelled pixels (the paper's definition for BCSS); "
                 "macro = mean over classes."]
    if paper:
        notes.append("paper = the paper's exact metrics as its code computes them (see each report's note).")
    if not all(r.class_metrics for r in rows):
        notes.append("* segment-everything masks carry no class: its numbers score the union of all masks "
                     "as the object class and are not class metrics.")
    if len({r.dataset for r in rows}) > 1:
        notes.append("Rows come from different data sets or splits: they are not directly comparable.")
    notes.append("s/image = model time per image (SAM: one embedding + one decoder call per dot).")
    return "\n".join(lines + notes) + "\n"


def to_json(rows: list[Row]) -> dict[str, Any]:
    return {"rows": [asdict(r) for r in rows],
            "note": "scores None = not in the report; class_metrics false = union of masks, not classes"}


def write_outputs(rows: list[Row], markdown: Path | None, json_path: Path | None) -> None:
    for path, text in ((markdown, to_markdown(rows) if markdown else ""),
                       (json_path, json.dumps(to_json(rows), indent=2) + "\n" if json_path else "")):
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
