"""Tissue detection and masks: real slide, blank slide, synthetic truth, user masks, fraction arithmetic."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from PIL import Image

from wsiseg.errors import SlideError
from wsiseg.slide import TissueMask, detect_tissue, open_slide, tissue_mask_from_image
from wsiseg.slide import tissue as tissue_module
from wsiseg.slide.reader import Slide
from wsiseg.slide.tissue import tissue_from_rgb
from wsiseg.synthetic import SyntheticTruth


def test_tissue_on_cmu(cmu_small_region: Path) -> None:
    with open_slide(cmu_small_region) as slide:
        tissue = detect_tissue(slide, mpp=8.0)
    # 2967 px * 0.499 um = 1480 um tall: analysed at 1480 / 512 um/px so the mask is 512 px tall
    assert tissue.mpp == pytest.approx(2967 * 0.499 / 512) and tissue.mask.shape == (512, 384)
    assert 0.3 < tissue.tissue_fraction < 0.5
    # The right-hand middle of this crop is dense tissue, the top-left corner is glass.
    assert tissue.fraction(1200, 1800, 300, 300) == 1.0
    assert tissue.fraction(0, 0, 300, 300) == 0.0


def test_no_tissue_on_blank_slide(blank_slide: Path) -> None:
    with open_slide(blank_slide) as slide:
        tissue = detect_tissue(slide)
    assert tissue.mask.size > 0 and not tissue.mask.any()
    assert tissue.mpp == pytest.approx(1.0)  # 512 um wide -> 512 px
    assert tissue.fraction(0, 0, 1024, 1024) == 0.0


def test_tissue_matches_synthetic_truth(synthetic_svs: SyntheticTruth) -> None:
    with open_slide(synthetic_svs.path) as slide:
        tissue = detect_tissue(slide, mpp=8.0)
    assert tissue.mpp == pytest.approx(2.0)  # 1024 um wide -> 512 px
    truth = synthetic_svs.labels(tissue.mpp) > 0
    assert tissue.mask.shape == truth.shape
    agreement = (tissue.mask == truth).mean()
    assert agreement > 0.95, agreement
    assert abs(tissue.tissue_fraction - truth.mean()) < 0.06


def test_fraction_arithmetic() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:4, 2:6] = True  # 8 tissue pixels
    tm = TissueMask(mask, mpp=4.0, slide_mpp=(0.5, 0.5))  # one mask pixel = 8x8 level-0 pixels
    assert tm.tissue_fraction == pytest.approx(0.08)
    assert tm.fraction(16, 16, 32, 16) == 1.0  # mask [2:4, 2:6] exactly
    assert tm.fraction(0, 0, 80, 80) == pytest.approx(0.08)
    assert tm.fraction(0, 0, 16, 16) == 0.0  # mask [0:2, 0:2]
    # a rectangle touching a tissue pixel by one level-0 pixel counts it fully
    assert tm.fraction(47, 31, 8, 8) == pytest.approx(1 / 4)
    assert tm.fraction(-100, -100, 50, 50) == 0.0
    assert tm.fraction(70, 70, 500, 500) == 0.0


def test_user_mask_from_png(synthetic_svs: SyntheticTruth, tmp_path: Path) -> None:
    truth = synthetic_svs.labels(4.0) > 0
    path = tmp_path / "mask.png"
    Image.fromarray((truth * 255).astype(np.uint8)).save(path)
    with open_slide(synthetic_svs.path) as slide:
        tm = tissue_mask_from_image(path, slide)
        assert tm.mpp == pytest.approx(4.0, rel=0.01)
        np.testing.assert_array_equal(tm.mask, truth)
        from_array = tissue_mask_from_image(truth.astype(np.uint8), slide)
        np.testing.assert_array_equal(from_array.mask, truth)
        rgba = np.zeros((*truth.shape, 4), np.uint8)
        rgba[..., 1] = truth * 200
        rgba[..., 3] = 255
        np.testing.assert_array_equal(tissue_mask_from_image(rgba, slide).mask, truth)
        with pytest.raises(SlideError, match="aspect"):
            tissue_mask_from_image(np.ones((100, 100), np.uint8), slide)
        with pytest.raises(SlideError, match="not found"):
            tissue_mask_from_image(tmp_path / "missing.png", slide)


def test_tissue_on_glas_image_is_almost_everything(glas_dir: Path) -> None:
    """GlaS crops are tissue edge to edge, including pale mucin: a small image gets a fine thumbnail."""
    fractions = []
    for n in (1, 2, 5, 8):
        with open_slide(glas_dir / "images" / f"testA_{n}.png", mpp=0.62) as slide:
            fractions.append(detect_tissue(slide).tissue_fraction)
    assert min(fractions) > 0.85, fractions


def _blobby_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Pink tissue blobs (holes, specks) on glass: 32x32 px cells, each tissue with probability 0.5."""
    rng = np.random.default_rng(seed)
    cells = rng.random((height // 32 + 1, width // 32 + 1)) < 0.5
    tissue = np.repeat(np.repeat(cells, 32, axis=0), 32, axis=1)[:height, :width]
    tissue[5::64, 5::64] = False  # one-pixel holes
    tissue[20::96, 20::96] = True  # one-pixel specks
    rgb = np.full((height, width, 3), 240, np.uint8)
    rgb[tissue] = (200, 110, 170)
    return rgb


def test_tissue_from_rgb_memory_is_a_few_bytes_per_pixel() -> None:
    """Peak extra memory of detection on a 2048x2048 thumbnail (numpy allocations, traced) < 6 bytes/px.

    Before strips, uint16 labels and two ping-pong morphology buffers it was ~22 bytes/px; the fixed
    strip temporaries weigh more on this image than on a 4096x4096 one, so the bound holds there too.
    """
    rgb = _blobby_rgb(2048, 2048)
    tracemalloc.start()
    try:
        mask = tissue_from_rgb(rgb, 8.0, min_area_um2=2_000.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak / rgb.shape[0] / rgb.shape[1] < 6.0, peak
    assert 0.4 < mask.mean() < 0.6
    tracemalloc.start()
    try:
        tm = TissueMask(mask, 8.0, (0.5, 0.5))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak / mask.size < 6.0, peak  # int32 summed-area table (4 bytes/px), built by strips
    assert tm.fraction(0, 0, 2048 * 16, 2048 * 16) == pytest.approx(mask.mean())


class _HugeSlide:
    """A Slide stand-in 100 000 x 2 000 level-0 pixels at 0.5 um/px (50 mm long) whose thumbnail is made
    up: tissue in the left half. Reading a real slide that long would take minutes."""

    dimensions = (100_000, 2_000)
    mpp = (0.5, 0.5)

    def __init__(self) -> None:
        self.requested: list[float] = []

    def thumbnail(self, mpp: float) -> np.ndarray:
        self.requested.append(mpp)
        width = math.ceil(self.dimensions[0] * self.mpp[0] / mpp - 1e-6)
        height = math.ceil(self.dimensions[1] * self.mpp[1] / mpp - 1e-6)
        rgb = np.full((height, width, 3), 240, np.uint8)
        rgb[:, :width // 2] = (200, 110, 170)
        return rgb


def test_thumbnail_is_capped_on_a_huge_slide() -> None:
    slide = _HugeSlide()
    tissue = detect_tissue(cast(Slide, slide), mpp=8.0)
    # 50 000 um at 8 um/px would be 6250 px: analysed at 50 000 / 2048 um/px instead
    assert slide.requested == [pytest.approx(50_000 / tissue_module.MAX_THUMBNAIL_PX)]
    assert tissue.mpp == pytest.approx(50_000 / 2048)
    assert tissue.mask.shape == (41, 2048)
    assert tissue.fraction(0, 0, 40_000, 2_000) == 1.0
    assert tissue.fraction(60_000, 0, 40_000, 2_000) == 0.0


def test_thumbnail_cap_on_a_real_slide(synthetic_svs: SyntheticTruth,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1024 um wide slide, cap lowered to 256 px: analysed at 4 um/px, not 2 (the 512 px minimum)."""
    monkeypatch.setattr(tissue_module, "MAX_THUMBNAIL_PX", 256)
    with open_slide(synthetic_svs.path) as slide:
        tissue = detect_tissue(slide, mpp=8.0)
    assert tissue.mpp == pytest.approx(4.0)
    assert tissue.mask.shape == (192, 256)
    truth = synthetic_svs.labels(tissue.mpp) > 0
    assert tissue.mask.shape == truth.shape
    assert (tissue.mask == truth).mean() > 0.9
