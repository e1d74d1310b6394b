"""One slide over several model replicas (``wsiseg.infer.replicas``): batches spread over the replicas,
stitched in order into the single-replica output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsiseg.errors import ConfigError
from wsiseg.infer import PatternModel, open_segmentation, segment_slide
from wsiseg.infer.replicas import ModelReplicas, replicas_of
from wsiseg.synthetic import SYNTHETIC_CLASSES

from .conftest import CountingModel, SyntheticSlide

MPP, TILE = 1.0, 256


def _replica(sleep_s: float = 0.0, fail_on: int | None = None, seed: int = 0) -> CountingModel:
    return CountingModel(PatternModel(SYNTHETIC_CLASSES, mpp=MPP, tile_size=TILE, seed=seed), fail_on=fail_on,
                         sleep_s=sleep_s)


def _arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    seg = open_segmentation(path)
    return np.asarray(seg.probs[0][...]), np.asarray(seg.labels[0][...])


def test_replicas_share_one_slide_and_give_the_single_replica_output(synthetic_slide: SyntheticSlide,
                                                                    tmp_path: Path) -> None:
    one = segment_slide(synthetic_slide.path, _replica(), tmp_path / "one.zarr", batch_size=2, progress=False)
    replicas = [_replica(sleep_s=0.05) for _ in range(3)]
    many = segment_slide(synthetic_slide.path, ModelReplicas(replicas), tmp_path / "many.zarr", batch_size=2,
                         progress=False)

    assert many.n_predicted == one.n_predicted
    assert sum(r.tiles for r in replicas) == one.n_predicted
    assert all(r.batches > 0 for r in replicas), [r.batches for r in replicas]  # every replica worked
    for got, want in zip(_arrays(many.out), _arrays(one.out), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_failing_replica_stops_the_run_and_it_resumes_exactly(synthetic_slide: SyntheticSlide,
                                                               tmp_path: Path) -> None:
    one = segment_slide(synthetic_slide.path, _replica(), tmp_path / "one.zarr", batch_size=2, progress=False)
    out = tmp_path / "many.zarr"
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_slide(synthetic_slide.path, ModelReplicas([_replica(0.02), _replica(0.02, fail_on=3)]), out,
                      batch_size=2, progress=False)
    resumed = segment_slide(synthetic_slide.path, _replica(), out, batch_size=2, progress=False)  # one device
    assert resumed.resumed and resumed.n_predicted < one.n_predicted
    for got, want in zip(_arrays(out), _arrays(one.out), strict=True):
        np.testing.assert_array_equal(got, want)


def test_replicas_must_be_one_model() -> None:
    with pytest.raises(ConfigError, match="same model"):
        ModelReplicas([_replica(), CountingModel(PatternModel(SYNTHETIC_CLASSES, mpp=2.0, tile_size=TILE))])
    with pytest.raises(ConfigError, match="at least one"):
        ModelReplicas([])
    single = _replica()
    assert replicas_of(single) == (single,)
    pair = ModelReplicas([_replica(), _replica()])
    assert pair.device == "cpu,cpu" and pair.provenance()["device"] == "cpu,cpu"


class _LanedModel(CountingModel):
    """A model that asks for ``lanes`` threads; records which threads called it and how many at once."""

    def __init__(self, lanes: int) -> None:
        super().__init__(PatternModel(SYNTHETIC_CLASSES, mpp=MPP, tile_size=TILE, seed=0), sleep_s=0.03)
        import threading

        self.lanes = lanes
        self.threads: set[int] = set()
        self.at_once = self.most_at_once = 0
        self._lock = threading.Lock()

    def predict(self, tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        import threading

        with self._lock:
            self.threads.add(threading.get_ident())
            self.at_once += 1
            self.most_at_once = max(self.most_at_once, self.at_once)
        try:
            return super().predict(tiles, out_size)
        finally:
            with self._lock:
                self.at_once -= 1


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_a_model_with_lanes_is_called_from_that_many_threads_with_the_same_output(
        synthetic_slide: SyntheticSlide, tmp_path: Path, lanes: int) -> None:
    one = segment_slide(synthetic_slide.path, _replica(), tmp_path / "one.zarr", batch_size=2, progress=False)
    model = _LanedModel(lanes)
    laned = segment_slide(synthetic_slide.path, model, tmp_path / "laned.zarr", batch_size=2, progress=False)

    assert laned.n_predicted == one.n_predicted == model.tiles
    assert len(model.threads) == lanes  # lanes_of(model) model threads
    assert model.most_at_once == lanes  # and they overlap (each call sleeps 30 ms)
    for got, want in zip(_arrays(laned.out), _arrays(one.out), strict=True):
        np.testing.assert_array_equal(got, want)


def test_lanes_of_defaults_to_one() -> None:
    from wsiseg.predictor import lanes_of

    assert lanes_of(_replica()) == 1
    assert lanes_of(_LanedModel(3)) == 3
