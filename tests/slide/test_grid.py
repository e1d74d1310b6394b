"""Tile grids: full coverage for many sizes/overlaps, level-0 positions, tissue filtering, bad options."""

from __future__ import annotations

import random

import numpy as np
import pytest

from wsiseg.errors import ConfigError
from wsiseg.slide import TissueMask, make_tile_grid, open_slide
from wsiseg.slide.reader import Slide
from wsiseg.synthetic import SyntheticTruth
from wsiseg.tiling import Tiling


class _FakeSlide:
    """Just the geometry :func:`make_tile_grid` uses."""

    def __init__(self, w0: int, h0: int, mpp0: float) -> None:
        self.dimensions = (w0, h0)
        self.mpp = (mpp0, mpp0)

    size_at = Slide.size_at


def _cases() -> list[tuple[int, int, float, float, int, int]]:
    rng = random.Random(1234)
    cases = [(1, 1, 0.5, 0.5, 1, 0), (1000, 1000, 0.5, 1.0, 500, 0), (1000, 1000, 0.5, 1.0, 256, 128),
             (513, 257, 0.25, 0.25, 256, 128)]
    for _ in range(60):
        tile = rng.randint(1, 300)
        cases.append((rng.randint(1, 3000), rng.randint(1, 3000), rng.choice([0.25, 0.2527, 0.5, 0.499]),
                      rng.choice([0.5, 1.0, 1.7, 2.0, 4.0]), tile, rng.randint(0, tile // 2)))
    return cases


@pytest.mark.parametrize(("w0", "h0", "mpp0", "mpp", "tile", "overlap"), _cases())
def test_grid_covers_every_pixel(w0: int, h0: int, mpp0: float, mpp: float, tile: int, overlap: int) -> None:
    slide = _FakeSlide(w0, h0, mpp0)
    grid = make_tile_grid(slide, Tiling.create(mpp, tile, overlap))  # type: ignore[arg-type]
    width_t, height_t = slide.size_at(mpp)  # type: ignore[call-arg]
    assert (grid.width_t, grid.height_t) == (width_t, height_t)
    assert width_t * mpp >= w0 * mpp0 - 1e-6 and (width_t - 1) * mpp < w0 * mpp0  # ceil
    assert len(grid) == grid.n_total == grid.n_cols * grid.n_rows
    idx = np.array([(t.index, t.col, t.row, t.x_t, t.y_t, t.x0, t.y0) for t in grid.tiles], np.int64)
    index, col, row, x_t, y_t, x0, y0 = idx.T
    np.testing.assert_array_equal(index, np.arange(len(idx)))  # row-major, deterministic
    np.testing.assert_array_equal(index, row * grid.n_cols + col)
    np.testing.assert_array_equal(x_t, col * grid.step)
    np.testing.assert_array_equal(y_t, row * grid.step)
    assert (x_t < width_t).all() and (y_t < height_t).all()  # no tile starts past the edge
    assert (np.abs(x0 - x_t * mpp / mpp0) <= 0.5).all() and (np.abs(y0 - y_t * mpp / mpp0) <= 0.5).all()
    # coverage count per target pixel via a 2-D difference array (+1 at a tile's corner, -1 past its end)
    diff = np.zeros((height_t + tile + 1, width_t + tile + 1), np.int32)
    np.add.at(diff, (y_t, x_t), 1)
    np.add.at(diff, (y_t + tile, x_t), -1)
    np.add.at(diff, (y_t, x_t + tile), -1)
    np.add.at(diff, (y_t + tile, x_t + tile), 1)
    covered = diff.cumsum(axis=0).cumsum(axis=1)[:height_t, :width_t]
    assert covered.min() >= 1
    # no superfluous column/row: dropping the last one would leave pixels uncovered
    assert grid.n_cols == 1 or (grid.n_cols - 2) * grid.step + tile < width_t
    assert grid.n_rows == 1 or (grid.n_rows - 2) * grid.step + tile < height_t


def test_grid_is_deterministic(synthetic_svs: SyntheticTruth) -> None:
    with open_slide(synthetic_svs.path) as slide:
        a = make_tile_grid(slide, Tiling.create(1.0, 256, 32))
        b = make_tile_grid(slide, Tiling.create(1.0, 256, 32))
    assert a == b and (a.n_cols, a.n_rows) == (5, 4)  # 1024x768 at 1 um/px, stride 224


def test_tissue_filter_keeps_tiles_that_touch_tissue(synthetic_svs: SyntheticTruth) -> None:
    mpp, tile = 1.0, 128
    labels = synthetic_svs.labels(4.0)
    truth = TissueMask(labels > 0, 4.0, (synthetic_svs.mpp, synthetic_svs.mpp))
    with open_slide(synthetic_svs.path) as slide:
        full = make_tile_grid(slide, Tiling.create(mpp, tile, 16))
        kept = make_tile_grid(slide, Tiling.create(mpp, tile, 16), tissue=truth)
        strict = make_tile_grid(slide, Tiling.create(mpp, tile, 16), tissue=truth, min_tissue_fraction=0.5)
    kept_idx = {t.index for t in kept.tiles}
    assert 0 < len(kept) < full.n_total and kept.n_total == full.n_total
    assert len(strict) < len(kept) and {t.index for t in strict.tiles} <= kept_idx
    # exactly the tiles whose footprint covers a tissue pixel of the 4 um/px truth are kept
    for t in full.tiles:
        ya, xa = t.y_t * mpp // 4.0, t.x_t * mpp // 4.0
        yb, xb = -(-(t.y_t + tile) * mpp // 4.0), -(-(t.x_t + tile) * mpp // 4.0)
        touches = bool(truth.mask[int(ya):int(yb), int(xa):int(xb)].any())
        assert (t.index in kept_idx) == touches, t
    # every tissue pixel at the target resolution lies in a kept tile
    covered = np.zeros((full.height_t, full.width_t), bool)
    for t in kept.tiles:
        covered[t.y_t:t.y_t + tile, t.x_t:t.x_t + tile] = True
    assert covered[synthetic_svs.labels(mpp) > 0].all()


@pytest.mark.parametrize(("mpp", "tile", "overlap", "message"),
                         [(1.0, 0, 0, "`tile_size`"), (1.0, 256, 129, "`overlap`"),
                          (1.0, 256, -1, "`overlap`"), (0.0, 256, 0, "`mpp`"),
                          (float("nan"), 256, 0, "`mpp`")])
def test_bad_tiling_is_one_config_error(mpp: float, tile: int, overlap: int, message: str) -> None:
    """The tile sizes are checked once, where they enter (Tiling.create); the grid takes them as they are."""
    with pytest.raises(ConfigError, match=message):
        Tiling.create(mpp, tile, overlap)
