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
