"""The cohort table a folder run leaves behind: ``out/summary.csv`` (:mod:`wsiseg.export.composition`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from wsiseg.infer.segment import SegmentResult


def write_summary(out: Path, slides: Sequence[Path], results: dict[int, SegmentResult],
                  failures: dict[int, tuple[Path, str]]) -> None:
    """``out/summary.csv``: one row per input slide, in input order (failed slides with their message)."""
    from wsiseg.export.composition import SUMMARY_FILE, SummaryRow, row_of
    from wsiseg.export.composition import write_summary as write_rows

    rows = []
    for index in range(len(slides)):
        if index in results:
            row = row_of(results[index].out, results[index].status.value)
            rows.append(dataclasses.replace(row, objects=results[index].objects))
        else:
            rows.append(SummaryRow(Path(slides[index]).name, "failed", error=failures[index][1]))
    out.mkdir(parents=True, exist_ok=True)
    write_rows(rows, out / SUMMARY_FILE)
