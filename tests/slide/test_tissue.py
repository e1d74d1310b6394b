"""Tissue detection and masks: real slide, blank slide, synthetic truth, user masks, fraction arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsiseg.errors import SlideError
from wsiseg.slide import SyntheticTruth, TissueMask, detect_tissue, open_slide, tissue_mask_from_image


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
