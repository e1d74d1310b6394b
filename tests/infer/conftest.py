"""Fixtures for wsiseg.infer tests: small synthetic slides (written once per session) and helper models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wsiseg.infer import ColourModel
from wsiseg.synthetic import SYNTHETIC_CLASSES, SyntheticTruth, write_synthetic_slide


@dataclass
class SyntheticSlide:
    path: Path
    truth: SyntheticTruth


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    """A 2048 x 1536 level-0 Aperio-like slide at 0.5 um/px with exact ground truth."""
    path = tmp_path_factory.mktemp("slides") / "synthetic.svs"
    return SyntheticSlide(path, write_synthetic_slide(path, 2048, 1536, mpp=0.5, seed=3))


class CountingModel:
    """Wraps a predictor: counts predicted tiles; fails on batch ``fail_on`` (1-based); may sleep."""

    def __init__(self, inner: Any, fail_on: int | None = None, sleep_s: float = 0.0) -> None:
        self.inner, self.fail_on, self.sleep_s = inner, fail_on, sleep_s
        self.classes, self.mpp, self.tile_size, self.device = inner.classes, inner.mpp, inner.tile_size, "cpu"
        self.output_stride = inner.output_stride
        self.batches = 0
        self.tiles = 0

    def predict(self, tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        self.batches += 1
        if self.fail_on is not None and self.batches == self.fail_on:
            raise RuntimeError("simulated crash inside the model")
        if self.sleep_s:
            import time

            time.sleep(self.sleep_s)
        out: np.ndarray = self.inner.predict(tiles, out_size)
        self.tiles += len(tiles)
        return out

    def provenance(self) -> dict[str, Any]:
        return dict(self.inner.provenance())


@pytest.fixture
def oracle(synthetic_slide: SyntheticSlide) -> ColourModel:
    return ColourModel(SYNTHETIC_CLASSES, synthetic_slide.truth.palette, mpp=0.5, tile_size=256)
