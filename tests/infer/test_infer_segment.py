"""End to end: synthetic slides segmented by the colour oracle reproduce the ground truth; resume; errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from wsiseg.errors import ConfigError, MissingMppError, OutputError, SlideError
from wsiseg.infer import (
    ColourModel,
    NullModel,
    PatternModel,
    RunStatus,
    open_segmentation,
    preview_path,
    segment_slide,
)
from wsiseg.infer.journal import WORK_DIR
from wsiseg.slide import TissueMask
from wsiseg.synthetic import SYNTHETIC_CLASSES

from .conftest import CountingModel, SyntheticSlide


def _dice_away_from_borders(pred: np.ndarray, truth: np.ndarray, margin: int) -> dict[int, float]:
    """Per-class Dice on pixels at least ``margin`` px from any class border (pred: class index or -1)."""
    core = np.zeros(truth.shape, bool)
    for c in np.unique(truth):
        core |= ndimage.binary_erosion(truth == c, iterations=margin, border_value=1)
    out = {}
    for c in np.unique(truth[core]):
        p, t = (pred == c) & core, (truth == c) & core
        if t.sum() > 500:
            out[int(c)] = 2 * (p & t).sum() / (p.sum() + t.sum())
    return out


def _arrays(path: Path) -> list[np.ndarray]:
    seg = open_segmentation(path)
    return [np.asarray(a[...]) for a in seg.probs] + [np.asarray(a[...]) for a in seg.labels]


@pytest.mark.parametrize(("mpp", "tile", "overlap", "chunk", "stride"), [
    (0.5, 256, 32, 256, 1),
    (1.0, 192, 96, 128, 1),  # overlap of half a tile, 2x coarser than level 0
    (0.75, 320, 0, 512, 1),  # no overlap, a resize factor that is not a power of two
    (0.5, 256, 32, 128, 4),  # output on a 4x coarser grid than the tiles (SAM-Path's native grid)
])
def test_oracle_reproduces_ground_truth(synthetic_slide: SyntheticSlide, tmp_path: Path, mpp: float,
                                        tile: int, overlap: int, chunk: int, stride: int) -> None:
    truth = synthetic_slide.truth
    radius = max(2, round(3.5 / mpp))  # average over ~7 um whatever the resolution
    model = ColourModel(SYNTHETIC_CLASSES, truth.palette, mpp=mpp, tile_size=tile, radius_px=radius,
                        output_stride=stride)
    out = tmp_path / "out.zarr"
    res = segment_slide(synthetic_slide.path, model, out, mpp=mpp, tile_size=tile, overlap=overlap,
                        chunk_size=chunk, tissue=False, progress=False, batch_size=3)
    seg = open_segmentation(out)
    assert res.output_mpp == seg.mpp[0] == mpp * stride and seg.metadata.analysis_mpp == mpp
    labels = np.asarray(seg.labels[0][...]).astype(int) - 1
    gt = truth.labels(mpp * stride)
    assert labels.shape == gt.shape == (res.height, res.width)
    assert (labels >= 0).all()  # everything analysed without tissue detection
    dice = _dice_away_from_borders(labels, gt, margin=-(-(radius + 3) // stride) + 1)
    assert len(dice) >= 4 and min(dice.values()) > 0.99, dice
    probs0 = np.asarray(seg.probs[0][...]).astype(int)
    assert np.abs(probs0.sum(axis=0) - 255).max() <= len(SYNTHETIC_CLASSES)  # quantised sums stay ~255
    attrs = seg.metadata.to_json()
    assert attrs["params"]["tile_size"] == tile and attrs["slide"]["width0"] == 2048
    assert attrs["finished"] and set(attrs["timings"]) >= {"read", "infer", "stitch", "write", "wall"}
    assert len(attrs["slide"]["sha256_head"]) == 64 and attrs["model"]["name"] == "colour"
    assert not (out / WORK_DIR).exists()
    assert preview_path(out).is_file() and preview_path(out).stat().st_size > 1000


def test_roi_mask_skips_tiles_and_writes_not_analysed(synthetic_slide: SyntheticSlide,
                                                      tmp_path: Path) -> None:
    truth = synthetic_slide.truth
    # ROI = left 40% of the slide (mask at 8 um/px aligned with level 0)
    w8, h8 = 2048 * 0.5 / 8, 1536 * 0.5 / 8
    mask = np.zeros((int(np.ceil(h8)), int(np.ceil(w8))), bool)
    mask[:, : int(w8 * 0.4)] = True
    roi = TissueMask(mask, 8.0, (0.5, 0.5))
    model = CountingModel(ColourModel(SYNTHETIC_CLASSES, truth.palette, mpp=1.0, tile_size=256))
    out = tmp_path / "roi.zarr"
    res = segment_slide(synthetic_slide.path, model, out, mpp=1.0, tile_size=256, overlap=32, mask=roi,
                        chunk_size=256, progress=False, preview=False)
    assert res.n_tiles < res.n_tiles_total and model.tiles == res.n_tiles
    seg = open_segmentation(out)
    labels = np.asarray(seg.labels[0][...])
    probs = np.asarray(seg.probs[0][...])
    # kept tiles touch the ROI, so they end less than a tile beyond it; past them nothing is analysed
    last_col = max(t for t in range(res.width) if labels[:, t].any())
    assert 0.4 * res.width <= last_col < 0.4 * res.width + 256
    assert (labels[:, last_col + 1:] == 0).all() and (probs[:, :, last_col + 1:] == 0).all()
    assert (labels[:, : int(0.4 * res.width)] > 0).all()


def test_resume_after_model_crash_is_identical_and_recomputes_nothing(synthetic_slide: SyntheticSlide,
                                                                     tmp_path: Path) -> None:
    truth = synthetic_slide.truth
    kwargs = {"mpp": 1.0, "tile_size": 128, "overlap": 16, "chunk_size": 128, "tissue": False,
              "progress": False, "preview": False, "batch_size": 2}
    ref = tmp_path / "ref.zarr"
    full = CountingModel(ColourModel(SYNTHETIC_CLASSES, truth.palette, mpp=1.0, tile_size=128))
    res = segment_slide(synthetic_slide.path, full, ref, **kwargs)
    assert full.tiles == res.n_tiles == res.n_tiles_total

    out = tmp_path / "crash.zarr"
    crashing = CountingModel(full.inner, fail_on=7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_slide(synthetic_slide.path, crashing, out, **kwargs)
    assert crashing.tiles == 12 and (out / WORK_DIR / "journal.json").is_file()
    with pytest.raises(OutputError, match="other settings"):
        segment_slide(synthetic_slide.path, full.inner, out, **{**kwargs, "overlap": 32})
    resumed = CountingModel(full.inner)
    res2 = segment_slide(synthetic_slide.path, resumed, out, **kwargs)
    assert res2.resumed and resumed.tiles == res.n_tiles - 12  # no finished tile predicted again
    for a, b in zip(_arrays(ref), _arrays(out), strict=True):
        assert np.array_equal(a, b)
    skipped = CountingModel(full.inner)
    res3 = segment_slide(synthetic_slide.path, skipped, out, **kwargs)  # finished: skipped, not an error
    assert res3.status is RunStatus.SKIPPED and skipped.tiles == 0 and res3.n_tiles == res.n_tiles
    assert "skipped (finished)" in res3.summary()
    again = CountingModel(full.inner)
    segment_slide(synthetic_slide.path, again, out, **{**kwargs, "overwrite": True})
    assert again.tiles == res.n_tiles


_KILL_SCRIPT = """
import sys, time
from wsiseg.infer import ColourModel, segment_slide
from wsiseg.synthetic import SYNTHETIC_CLASSES
import numpy as np
palette = np.array({palette})

class Slow(ColourModel):
    def predict(self, tiles, out_size=None):
        time.sleep(0.15)
        return super().predict(tiles, out_size)

m = Slow(SYNTHETIC_CLASSES, palette, mpp=1.0, tile_size=128)
if sys.argv[3] == "2":  # two replicas sharing the slide's batches
    from wsiseg.infer.replicas import ModelReplicas
    m = ModelReplicas([m, Slow(SYNTHETIC_CLASSES, palette, mpp=1.0, tile_size=128)])
segment_slide(sys.argv[1], m, sys.argv[2], mpp=1.0, tile_size=128, overlap=16, chunk_size=128, tissue=False,
              progress=False, preview=False, batch_size=1)
"""


@pytest.mark.parametrize("replicas", [1, 2])
def test_resume_after_sigkill(synthetic_slide: SyntheticSlide, tmp_path: Path, replicas: int) -> None:
    """kill -9 mid-run (one model, or two replicas sharing the slide), then a rerun on one model: it
    predicts only the tiles after the last commit and the output equals an uninterrupted run's."""
    truth = synthetic_slide.truth
    kwargs = {"mpp": 1.0, "tile_size": 128, "overlap": 16, "chunk_size": 128, "tissue": False,
              "progress": False, "preview": False, "batch_size": 1}
    model = ColourModel(SYNTHETIC_CLASSES, truth.palette, mpp=1.0, tile_size=128)
    ref = tmp_path / "ref.zarr"
    res = segment_slide(synthetic_slide.path, model, ref, **kwargs)

    out = tmp_path / "killed.zarr"
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT.format(palette=truth.palette.tolist()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(synthetic_slide.path), str(out), str(replicas)],
                            env=env)
    journal = out / WORK_DIR / "journal.json"
    deadline = time.monotonic() + 120
    cursor = 0
    while time.monotonic() < deadline and cursor < 15:
        time.sleep(0.05)
        try:
            cursor = json.loads(journal.read_text())["stitcher"]["cursor"]
        except (OSError, ValueError, KeyError):
            continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself ({proc.returncode})"
    committed = json.loads(journal.read_text())["stitcher"]["cursor"]
    assert 15 <= committed < res.n_tiles_total, (cursor, committed)
    counting = CountingModel(model)
    res2 = segment_slide(synthetic_slide.path, counting, out, **kwargs)
    assert res2.resumed and counting.tiles == res.n_tiles_total - committed, (counting.tiles, committed)
    for n, (a, b) in enumerate(zip(_arrays(ref), _arrays(out), strict=True)):
        assert np.array_equal(a, b), f"array {n} differs in {(a != b).sum()} values"


def test_read_completion_order_does_not_change_output(synthetic_slide: SyntheticSlide, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from wsiseg.slide.reader import Slide

    constant = [0.12, 0.2, 0.28, 0.25, 0.15]  # x 255 lands away from rounding ties
    model = NullModel(SYNTHETIC_CLASSES, 2.0, 64, probs=constant)
    colour = ColourModel(SYNTHETIC_CLASSES, synthetic_slide.truth.palette, mpp=2.0, tile_size=64, radius_px=2)
    kwargs = {"mpp": 2.0, "tile_size": 64, "overlap": 16, "chunk_size": 64, "tissue": False,
              "progress": False, "preview": False, "batch_size": 6}
    segment_slide(synthetic_slide.path, colour, tmp_path / "a.zarr", read_workers=1, **kwargs)
    original = Slide.read_region
    rng = np.random.default_rng(0)

    def jittery(self: Slide, *args: object, **kwargs: object) -> np.ndarray:
        time.sleep(float(rng.uniform(0, 0.01)))
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Slide, "read_region", jittery)
    segment_slide(synthetic_slide.path, colour, tmp_path / "b.zarr", read_workers=4, **kwargs)
    for a, b in zip(_arrays(tmp_path / "a.zarr"), _arrays(tmp_path / "b.zarr"), strict=True):
        assert np.array_equal(a, b)
    # constant predictions stitch to exactly that constant everywhere (no seams, no edge effects)
    segment_slide(synthetic_slide.path, model, tmp_path / "c.zarr", **kwargs)
    probs = np.asarray(open_segmentation(tmp_path / "c.zarr").probs[0][...])
    expected = np.rint(np.array(constant) * 255).astype(np.uint8)
    assert (probs == expected[:, None, None]).all()


def test_bad_inputs_raise_user_errors(synthetic_slide: SyntheticSlide, tmp_path: Path) -> None:
    model = NullModel(SYNTHETIC_CLASSES, 1.0, 128)
    with pytest.raises(SlideError, match="not found"):
        segment_slide(tmp_path / "missing.svs", model, tmp_path / "x.zarr", progress=False)
    from PIL import Image

    png = tmp_path / "plain.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(png)
    with pytest.raises(MissingMppError, match="`slide_mpp`"):
        segment_slide(png, model, tmp_path / "y.zarr", progress=False)
    res = segment_slide(png, model, tmp_path / "y.zarr", progress=False, slide_mpp=0.5, tissue=False,
                        tile_size=16, overlap=0, mpp=1.0)
    assert (res.width, res.height, res.output_mpp) == (8, 8, 4.0)  # the null model's 4x output grid
    with pytest.raises(ConfigError, match="whole multiple of `mpp`"):
        segment_slide(png, model, tmp_path / "w.zarr", progress=False, slide_mpp=0.5, mpp=1.0,
                      tile_size=16, overlap=0, output_mpp=1.5)
    with pytest.raises(ConfigError, match=r"must divide the tile size \(16\) and the overlap \(6\)"):
        segment_slide(png, model, tmp_path / "w.zarr", progress=False, slide_mpp=0.5, mpp=1.0,
                      tile_size=16, overlap=6)
    assert not (tmp_path / "w.zarr").exists()
    with pytest.raises(ConfigError, match="overlap"):
        segment_slide(synthetic_slide.path, model, tmp_path / "z.zarr", overlap=100, progress=False)
    with pytest.raises(ConfigError, match="`mpp`"):
        segment_slide(synthetic_slide.path, NullModel(SYNTHETIC_CLASSES, None, 128), tmp_path / "z.zarr",
                      progress=False)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "important.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a resumable"):
        segment_slide(synthetic_slide.path, model, other, progress=False)
    with pytest.raises(OutputError, match="not a zarr store"):
        segment_slide(synthetic_slide.path, model, other, progress=False, overwrite=True)
    assert (other / "important.txt").read_text() == "keep me"


def test_resume_after_write_failure_is_identical(synthetic_slide: SyntheticSlide, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing chunk write (e.g. disk full) must not let a later batch's state be committed over it."""
    from wsiseg.io.omezarr import SegmentationWriter

    truth = synthetic_slide.truth
    model = ColourModel(SYNTHETIC_CLASSES, truth.palette, mpp=2.0, tile_size=64, radius_px=2)
    kwargs = {"mpp": 2.0, "tile_size": 64, "overlap": 16, "chunk_size": 64, "tissue": False,
              "progress": False, "preview": False, "batch_size": 2}
    segment_slide(synthetic_slide.path, model, tmp_path / "ref.zarr", **kwargs)
    original = SegmentationWriter.write_chunk
    calls = {"n": 0}

    def flaky(self: SegmentationWriter, box: tuple[int, int, int, int], probs: np.ndarray) -> None:
        calls["n"] += 1
        if calls["n"] == 9:
            raise OSError(28, "No space left on device")
        original(self, box, probs)

    monkeypatch.setattr(SegmentationWriter, "write_chunk", flaky)
    with pytest.raises(OSError, match="No space"):
        segment_slide(synthetic_slide.path, model, tmp_path / "out.zarr", **kwargs)
    monkeypatch.setattr(SegmentationWriter, "write_chunk", original)
    segment_slide(synthetic_slide.path, model, tmp_path / "out.zarr", **kwargs)
    for a, b in zip(_arrays(tmp_path / "ref.zarr"), _arrays(tmp_path / "out.zarr"), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("output_mpp", [None, 1.0, 2.0])
def test_output_grid_follows_output_mpp(synthetic_slide: SyntheticSlide, tmp_path: Path,
                                        output_mpp: float | None) -> None:
    """The output's level 0 is at ``output_mpp`` (default: the model's grid); the model is asked for
    tiles of that size, and constant predictions stitch to that constant whatever the grid."""
    constant = [0.12, 0.2, 0.28, 0.25, 0.15]
    model = CountingModel(NullModel(SYNTHETIC_CLASSES, 1.0, 128, probs=constant))  # native stride 4
    out = tmp_path / "o.zarr"
    res = segment_slide(synthetic_slide.path, model, out, mpp=1.0, tile_size=128, overlap=16,
                        tissue=False, progress=False, preview=False, output_mpp=output_mpp)
    stride = 4 if output_mpp is None else round(output_mpp)
    seg = open_segmentation(out)
    assert res.output_mpp == seg.mpp[0] == float(stride) and seg.metadata.params["output_mpp"] == stride
    assert (res.width, res.height) == (-(-1024 // stride), -(-768 // stride))
    assert seg.labels[0].shape == (res.height, res.width)
    probs = np.asarray(seg.probs[0][...])
    assert (probs == np.rint(np.array(constant) * 255).astype(np.uint8)[:, None, None]).all()
    assert seg.downsample0(0) == (2.0 * stride, 2.0 * stride)  # slide level 0 is 0.5 um/px


def test_killed_before_the_preview_is_written_resumes_to_write_it(synthetic_slide: SyntheticSlide,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from wsiseg.infer import preview

    kwargs = {"mpp": 2.0, "tile_size": 64, "overlap": 16, "tissue": False, "progress": False}
    model = CountingModel(NullModel(SYNTHETIC_CLASSES, 2.0, 64))
    out = tmp_path / "p.zarr"

    def killed(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(preview, "write_preview", killed)
    with pytest.raises(KeyboardInterrupt):
        segment_slide(synthetic_slide.path, model, out, **kwargs)
    assert not open_segmentation(out).finished and not preview_path(out).exists()
    monkeypatch.undo()
    n = model.tiles
    res = segment_slide(synthetic_slide.path, model, out, **kwargs)  # no --overwrite needed
    assert res.resumed and model.tiles == n  # nothing predicted again
    assert open_segmentation(out).finished and preview_path(out).stat().st_size > 1000
    assert not (out / WORK_DIR).exists()


@pytest.mark.parametrize("failing_write", [1, 4, 16])
def test_a_failed_chunk_write_is_redone_on_resume(synthetic_slide: SyntheticSlide, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  failing_write: int) -> None:
    """A write that fails (disk full) while the stitcher waits for a writer: the journal never moves past
    it, so the resumed output equals an uninterrupted run's."""
    from wsiseg.io.omezarr import SegmentationWriter

    model = PatternModel(SYNTHETIC_CLASSES, mpp=2.0, tile_size=64)
    kwargs = {"mpp": 2.0, "tile_size": 64, "overlap": 16, "chunk_size": 16, "tissue": False,
              "progress": False, "preview": False, "batch_size": 4, "write_workers": 1,
              "checkpoint_s": 1000.0}
    segment_slide(synthetic_slide.path, model, tmp_path / "ref.zarr", **kwargs)
    write_chunk = SegmentationWriter.write_chunk
    calls = {"n": 0}
    lock = threading.Lock()

    def flaky(self: SegmentationWriter, box: Any, probs: np.ndarray) -> None:
        with lock:
            calls["n"] += 1
            n = calls["n"]
        if n == failing_write:
            time.sleep(0.05)  # the queue fills behind it
            raise OSError(28, "No space left on device")
        write_chunk(self, box, probs)

    out = tmp_path / "cut.zarr"
    monkeypatch.setattr(SegmentationWriter, "write_chunk", flaky)
    with pytest.raises(OSError, match="No space"):
        segment_slide(synthetic_slide.path, model, out, **kwargs)
    monkeypatch.setattr(SegmentationWriter, "write_chunk", write_chunk)
    segment_slide(synthetic_slide.path, model, out, **kwargs)
    for a, b in zip(_arrays(tmp_path / "ref.zarr"), _arrays(out), strict=True):
        assert np.array_equal(a, b), f"{(a != b).sum()} values differ"
