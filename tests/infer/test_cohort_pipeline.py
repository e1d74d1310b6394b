"""A local cohort run as a pipeline (``wsiseg.infer.cohort.local``): while the model runs over one slide,
the next is planned and the previous finished, and the outputs stay those of slide-after-slide runs."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wsiseg.infer import PatternModel, RunStatus, open_segmentation, segment_slide, segment_slides
from wsiseg.infer.cohort import local
from wsiseg.infer.options import SegmentOptions
from wsiseg.infer.segment import SlideTask
from wsiseg.synthetic import SYNTHETIC_CLASSES, write_synthetic_slide

from .conftest import CountingModel

MPP, TILE = 2.0, 128
#: how long a test waits for the pipeline to reach a point it must reach (a sequential run never does)
PATIENCE_S = 60.0


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small slides and, second in order, a corrupt one."""
    root = tmp_path_factory.mktemp("pipeline-slides")
    for name, seed in (("a", 1), ("c", 3), ("d", 4)):
        write_synthetic_slide(root / f"{name}.svs", 1400, 1100, mpp=0.5, seed=seed)
    (root / "b_corrupt.svs").write_bytes(b"not a slide")
    return sorted(root.iterdir())


def _model() -> CountingModel:
    return CountingModel(PatternModel(SYNTHETIC_CLASSES, mpp=MPP, tile_size=TILE))


def _arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seg = open_segmentation(path)
    return (np.asarray(seg.probs[0][...]), np.asarray(seg.labels[0][...]),
            np.asarray(seg.label_images["qc"][0][0][...]))


def test_pipelined_outputs_equal_slide_after_slide_runs(slides: list[Path], tmp_path: Path) -> None:
    result = segment_slides(slides, _model(), tmp_path / "cohort", single=False, progress=False,
                            geojson=tmp_path / "geojson", batch_size=3)

    assert [p.name for p, _ in result.failures] == ["b_corrupt.svs"]
    assert [r.slide.name for r in result.results] == ["a.svs", "c.svs", "d.svs"]
    for r in result.results:
        alone = segment_slide(r.slide, _model(), tmp_path / "alone" / r.out.name, batch_size=3,
                              progress=False)
        for got, want in zip(_arrays(r.out), _arrays(alone.out), strict=True):
            np.testing.assert_array_equal(got, want)
        assert open_segmentation(r.out).finished
        assert (tmp_path / "geojson" / f"{r.slide.stem}.geojson").is_file()
        assert 0 < r.timings["wall"] <= result.seconds


def test_next_slide_is_predicted_while_the_previous_one_finishes(
        slides: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slide a's finishing waits until the model has started on slide c: a run that finished a before it
    planned or predicted c would never get there."""
    model = _model()
    second_started = threading.Event()
    events: list[str] = []
    predict = model.predict

    def recording_predict(tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        if model.batches == first_slide_batches[0]:
            second_started.set()
        out: np.ndarray = predict(tiles, out_size)
        return out

    first_slide_batches = [-1]
    finish = SlideTask.finish

    def slow_finish(task: SlideTask) -> Any:
        if task.slide_path.name == "a.svs":
            first_slide_batches[0] = model.batches
            events.append("a finishing")
            assert second_started.wait(PATIENCE_S), "the model did not start on the next slide"
            events.append("c predicted meanwhile")
        return finish(task)

    monkeypatch.setattr(model, "predict", recording_predict)
    monkeypatch.setattr(SlideTask, "finish", slow_finish)
    result = segment_slides([slides[0], slides[2]], model, tmp_path / "out", single=False, progress=False)

    assert result.ok, result.failures
    assert events == ["a finishing", "c predicted meanwhile"]
    assert [r.status for r in result.results] == [RunStatus.DONE, RunStatus.DONE]


def test_a_stopped_run_closes_the_planned_slide_and_resumes(
        slides: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[str] = []
    close = SlideTask.close

    def recording_close(task: SlideTask) -> None:
        closed.append(task.slide_path.name)
        close(task)

    monkeypatch.setattr(SlideTask, "close", recording_close)
    crashing = _model()
    crashing.fail_on = 2
    two = [slides[0], slides[2]]
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_slides(two, crashing, tmp_path / "out", single=False, progress=False, batch_size=2)
    assert sorted(closed) == ["a.svs", "c.svs"]  # c was planned (opened) while a ran, and closed again

    again = segment_slides(two, _model(), tmp_path / "out", single=False, progress=False, batch_size=2)
    assert again.ok and [r.status for r in again.results] == [RunStatus.RESUMED, RunStatus.RESUMED]
    for r in again.results:
        alone = segment_slide(r.slide, _model(), tmp_path / "alone" / r.out.name, batch_size=2,
                              progress=False)
        for got, want in zip(_arrays(r.out), _arrays(alone.out), strict=True):
            np.testing.assert_array_equal(got, want)


def test_no_jobs_no_outcomes() -> None:
    assert list(local.run_local([], _model(), False, False, SegmentOptions())) == []


def test_outcomes_are_reported_in_input_order(slides: list[Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The corrupt second slide fails while the first is still finishing: its line still comes second."""
    finish = SlideTask.finish

    def slow_finish(task: SlideTask) -> Any:
        if task.slide_path.name == "a.svs":
            time.sleep(1.0)
        return finish(task)

    monkeypatch.setattr(SlideTask, "finish", slow_finish)
    lines: list[str] = []
    segment_slides(slides[:3], _model(), tmp_path / "out", single=False, progress=True, report=lines.append)
    assert [line.split(":")[0] for line in lines] == ["a.svs", "wsiseg", "c.svs"], lines
    assert "b_corrupt.svs" in lines[1]


def test_ctrl_c_while_a_slide_is_planned_closes_it(slides: list[Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    closed: list[str] = []
    plan, close = local.plan_slide, SlideTask.close

    def slow_plan(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)  # the interrupt arrives while the run waits for this
        task = plan(*args, **kwargs)
        opened.append(task.slide_path.name)
        return task

    def recording_close(task: SlideTask) -> None:
        closed.append(task.slide_path.name)
        close(task)

    monkeypatch.setattr(local, "plan_slide", slow_plan)
    monkeypatch.setattr(SlideTask, "close", recording_close)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        segment_slides([slides[0], slides[2]], _model(), tmp_path / "out", single=False, progress=False)
    timer.join()
    assert "a.svs" in opened and sorted(closed) == sorted(opened)  # every slide opened is closed again
