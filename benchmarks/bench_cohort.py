"""Does the model wait between the slides of a cohort? ``segment_slides`` (planning of the next slide and
finishing of the previous one overlapped with the model phase, ``wsiseg.infer.cohort.local``) against the
same slides run one after another (``segment_slide`` then the GeoJSON export, which is what a cohort run did
before), in one run.

    python benchmarks/bench_cohort.py [--slides 4] [--size 6144] [--batch-s 0.08] [--checkpoint FILE]

The model is an accelerator stand-in: :class:`~wsiseg.infer.PatternModel` probabilities after ``--batch-s``
seconds of sleep per batch (the host is free meanwhile, as it is while a GPU computes), or a real
checkpoint with ``--checkpoint`` (on a CPU its compute then competes with the host's work). Every slide
gets QC, a preview and a GeoJSON export, as ``wsiseg segment --geojson`` does. Printed per mode: wall time,
the model's busy share of it, the longest gap between two model calls within a slide (one batch's wait
for reads) and between slides (the last call of one slide and the first of the next), and the ratio of
the two modes' wall times.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.infer import PatternModel, segment_slide, segment_slides
from wsiseg.infer.cohort.plan import SlideJob, export_job
from wsiseg.infer.options import SegmentOptions
from wsiseg.predictor import Predictor
from wsiseg.synthetic import SYNTHETIC_CLASSES, write_synthetic_slide


class TimedModel:
    """A predictor that records when each batch ran (``calls``: ``(start, end)`` perf_counter seconds)."""

    def __init__(self, inner: Predictor, batch_s: float) -> None:
        self.inner, self.batch_s = inner, batch_s
        self.classes, self.mpp, self.tile_size = inner.classes, inner.mpp, inner.tile_size
        self.output_stride, self.device = inner.output_stride, inner.device
        self.calls: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def predict(self, tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        t0 = time.perf_counter()
        if self.batch_s:
            time.sleep(self.batch_s)
        out = self.inner.predict(tiles, out_size)
        with self._lock:
            self.calls.append((t0, time.perf_counter()))
        return out

    def provenance(self) -> dict[str, Any]:
        return dict(self.inner.provenance())


def _gaps(model: TimedModel, starts: list[float]) -> dict[str, float]:
    """Busy seconds and the longest gaps between model calls, split at the slides' first calls."""
    calls = sorted(model.calls)
    busy = sum(e - s for s, e in calls)
    within, between = 0.0, 0.0
    for (_, end), (start, _) in itertools.pairwise(calls):
        crosses = any(end <= boundary <= start for boundary in starts)
        if crosses:
            between = max(between, start - end)
        else:
            within = max(within, start - end)
    return {"busy_s": busy, "max_gap_within_slide_s": within, "max_gap_between_slides_s": between}


def _first_calls(model: TimedModel, n_before: list[int]) -> list[float]:
    calls = sorted(model.calls)
    return [calls[i][0] for i in n_before[1:] if i < len(calls)]


def run(slides: list[Path], model: TimedModel, out: Path, pipelined: bool,
        options: SegmentOptions) -> tuple[float, list[int]]:
    """Wall seconds and how many model calls came before each slide's first."""
    per_slide: list[int] = []
    geojson = out / "geojson"
    t0 = time.perf_counter()
    if pipelined:
        tiles_before = [0]
        result = segment_slides(slides, model, out, options, single=False, geojson=geojson, progress=False)
        assert result.ok, result.failures
        for r in result.results[:-1]:
            tiles_before.append(tiles_before[-1] + -(-r.n_tiles // options.batch_size))
        per_slide = tiles_before
    else:
        for i, slide in enumerate(slides):
            per_slide.append(len(model.calls))
            job = SlideJob(i, slide, out / f"{slide.stem}.zarr", geojson / f"{slide.stem}.geojson")
            export_job(job, segment_slide(slide, model, job.out, options, progress=False), options)
    return time.perf_counter() - t0, per_slide


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slides", type=int, default=4)
    ap.add_argument("--size", type=int, default=6144, help="slide side, level-0 px at 0.5 um/px")
    ap.add_argument("--batch-s", type=float, default=0.08, help="seconds per batch of the stand-in model")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a real model instead of the stand-in")
    args = ap.parse_args()
    if args.checkpoint is not None:
        from wsiseg.model import load_model

        inner: Predictor = load_model(args.checkpoint)
        batch_s = 0.0
    else:
        inner, batch_s = PatternModel(SYNTHETIC_CLASSES, mpp=1.0, tile_size=512), args.batch_s
    options = SegmentOptions(batch_size=4)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        slides = [write_synthetic_slide(root / f"s{i}.svs", args.size, args.size, mpp=0.5, seed=i).path
                  for i in range(args.slides)]
        figures: dict[str, Any] = {}
        for name, pipelined in (("slide_after_slide", False), ("pipelined", True)):
            model = TimedModel(inner, batch_s)
            wall, before = run(slides, model, root / name, pipelined, options)
            gaps = _gaps(model, _first_calls(model, before))
            figures[name] = {"wall_s": round(wall, 2), "model_busy_share": round(gaps["busy_s"] / wall, 3),
                             **{k: round(v, 3) for k, v in gaps.items()},
                             "batches": len(model.calls)}
            print(json.dumps({"mode": name, **figures[name]}), flush=True)
        ratio = figures["slide_after_slide"]["wall_s"] / figures["pipelined"]["wall_s"]
        print(json.dumps({"summary": {"slides": args.slides, "size_px": args.size,
                                      "speedup_pipelined": round(ratio, 3),
                                      "busy_share": [figures["slide_after_slide"]["model_busy_share"],
                                                     figures["pipelined"]["model_busy_share"]]}}))


if __name__ == "__main__":
    main()
