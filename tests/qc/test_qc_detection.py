"""QC detection against exact ground truth (issue 22): pen strokes composited in optical density from
measured ink colours over real tissue (CMU-1, GlaS) and synthetic slides, pure ink over glass, Gaussian blur
of known regions of CMU-1; clean images keep their tissue. Each image is assessed as ``segment`` does (written
as a one-level slide, ``assess_slide`` on its thumbnail). ``benchmarks/bench_qc.py`` measures the same on all
60 GlaS Test A images (README, Quality control); the bounds here are what these subsets reach, so a
regression fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsiseg.qc import FocusGrid, QCLabel, QCMap, QCSettings, assess_slide, block_size
from wsiseg.slide import open_slide
from wsiseg.synthetic.artifacts import (
    INK_COLOURS,
    blur_region,
    composite,
    ink_od,
    share_on_grid,
    stroke_density,
)
from wsiseg.synthetic.slides import write_synthetic_slide

#: No ink at all below this total OD (clean tissue); ink from this one (the truth).
NO_INK, INK = 0.02, 0.15


def assess(rgb: np.ndarray, mpp: float, tmp: Path) -> QCMap:
    path = tmp / "image.png"
    Image.fromarray(rgb).save(path)
    with open_slide(path, mpp=mpp) as slide:
        qc_map, _ = assess_slide(slide, QCSettings())
    return qc_map


def score_strokes(images: list[tuple[np.ndarray, float, tuple[float, float]]], tmp: Path,
                  seed: int = 0) -> dict[str, tuple[float, float]]:
    """Per ink colour, pooled over ``images`` (rgb, mpp, stroke widths in um): (share of ink pixels
    excluded, share of clean tissue excluded), one stroke per image and colour."""
    rng = np.random.default_rng(seed)
    counts = {name: np.zeros(4) for name in INK_COLOURS}
    for rgb, mpp, widths in images:
        clean_map = assess(rgb, mpp, tmp)
        for name, colour in INK_COLOURS.items():
            width = float(rng.uniform(*widths))
            density = stroke_density(rgb.shape[:2], mpp, rng, width_um=width, edge_um=15.0, n_points=3)
            od = ink_od(density, colour, rng)
            qc_map = assess(composite(rgb, od), mpp, tmp)
            pen = qc_map.labels == QCLabel.PEN
            total, shape = od.sum(axis=-1), qc_map.labels.shape
            ink = share_on_grid(total >= INK, mpp, qc_map.mpp, shape) >= 0.5
            clean = clean_map.tissue & (share_on_grid(total >= NO_INK, mpp, qc_map.mpp, shape) == 0)
            counts[name] += [(pen & ink).sum(), ink.sum(), (pen & clean).sum(), clean.sum()]
    return {name: (c[0] / c[1], c[2] / c[3]) for name, c in counts.items()}


def real_images(shared: Path) -> Iterator[tuple[np.ndarray, float, tuple[float, float]]]:
    """CMU-1 (strokes 150-400 um wide) and every twentieth GlaS Test A image (strokes 20-35 % of its
    shorter side: a full pen stroke would cover it)."""
    with open_slide(shared / "slides/CMU-1-Small-Region.svs") as slide:
        w, h = slide.dimensions
        yield slide.read_region(0, 0, w, h, slide.mpp[0]), slide.mpp[0], (150.0, 400.0)
    for path in sorted((shared / "glas-full/testA/images").glob("*.png"))[::20]:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        side = min(rgb.shape[:2]) * 0.62
        yield rgb, 0.62, (0.2 * side, 0.35 * side)


@pytest.fixture(scope="module")
def synthetic_tissue(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """3072 x 3072 px of a synthetic H&E-like slide at 0.5 um/px."""
    path = tmp_path_factory.mktemp("qc") / "synthetic.svs"
    write_synthetic_slide(path, 3072, 3072, seed=5)
    with open_slide(path) as slide:
        return slide.read_region(0, 0, 3072, 3072, 0.5)


@pytest.mark.parametrize("colour", list(INK_COLOURS))
def test_pure_ink_over_glass_leaves_no_tissue(tmp_path: Path, colour: str) -> None:
    """Ink alone is no tissue: before QC tissue detection takes the stroke for tissue (saturated colour),
    after QC at most 2 % of the image is left as analysable tissue."""
    rng = np.random.default_rng(1)
    white = np.full((1024, 1024, 3), 242, np.uint8)
    for _ in range(2):
        od = ink_od(stroke_density(white.shape[:2], 2.0, rng, width_um=float(rng.uniform(300, 800))),
                    INK_COLOURS[colour], rng)
        qc_map = assess(composite(white, od), 2.0, tmp_path)
        assert qc_map.tissue.mean() > 0.1
        assert (qc_map.labels == QCLabel.TISSUE).mean() <= 0.02


@pytest.mark.shared
def test_ink_over_real_tissue(shared_data: Path, tmp_path: Path) -> None:
    """Red ink beside eosin-rich tissue included: most ink excluded, little clean tissue."""
    scores = score_strokes(list(real_images(shared_data)), tmp_path)
    # measured on these 4 images: ink 0.93 (black) to 1.0; clean tissue 1.0 % (red, black), 3.3 % (green),
    # 4.8 % (blue): the tissue beside a found stroke is not in the image's own tissue sample, which finds
    # more of the stroke's faint edges (60 images: recall +5-7 points) and some tissue beside them
    for name, (ink_excluded, clean_excluded) in scores.items():
        assert ink_excluded >= {"black": 0.9}.get(name, 0.95), (name, scores)
        assert clean_excluded <= {"blue": 0.06, "green": 0.04}.get(name, 0.015), (name, scores)


def test_ink_over_synthetic_tissue(synthetic_tissue: np.ndarray, tmp_path: Path) -> None:
    """The synthetic slide's dense blue-purple classes (tumour, inflammatory) are bluer than H&E: blue ink
    over them is the hardest case (measured: 0.89 of its pixels excluded; clean tissue excluded <= 0.6 %)."""
    scores = score_strokes([(synthetic_tissue, 0.5, (150.0, 400.0))], tmp_path)
    for name, (ink_excluded, clean_excluded) in scores.items():
        assert ink_excluded >= {"blue": 0.85}.get(name, 0.95), (name, scores)
        assert clean_excluded <= 0.02, (name, scores)


@pytest.mark.shared
def test_clean_real_images_keep_their_tissue(shared_data: Path, tmp_path: Path) -> None:
    """No ink, no exclusion: tissue after QC is the tissue detected, within 1 % (CMU-1, GlaS)."""
    for rgb, mpp, _ in real_images(shared_data):
        qc_map = assess(rgb, mpp, tmp_path)
        lost = 1 - (qc_map.labels == QCLabel.TISSUE).sum() / qc_map.tissue.sum()
        assert lost <= 0.01


def test_clean_synthetic_slide_keeps_its_tissue(synthetic_tissue: np.ndarray, tmp_path: Path) -> None:
    qc_map = assess(synthetic_tissue, 0.5, tmp_path)
    assert 1 - (qc_map.labels == QCLabel.TISSUE).sum() / qc_map.tissue.sum() <= 0.01


def blurred_blocks(image: np.ndarray, mpp: float, tile: int = 512, overlap: int = 64) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """Blurred pixels found by a FocusGrid over the image's tiles, and tissue pixels (blocks at least half
    tissue, as judged)."""
    settings = QCSettings().blur
    h, w = image.shape[:2]
    step = tile - overlap
    n_cols, n_rows = -(-(w - overlap) // step), -(-(h - overlap) // step)
    grid = FocusGrid(block_size(step, mpp, settings.block_um), step, tile, n_cols, n_rows, settings)
    padded = np.full(((n_rows - 1) * step + tile, (n_cols - 1) * step + tile, 3), 255, np.uint8)
    padded[:h, :w] = image
    for row in range(n_rows):
        for col in range(n_cols):
            grid.measure(col, row, padded[row * step:row * step + tile, col * step:col * step + tile])
    b = grid.block
    tissue = image[:h // b * b, :w // b * b, 1] < 215
    share = tissue.reshape(h // b, b, w // b, b).mean(axis=(1, 3)) >= 0.5
    tissue_px = np.zeros((h, w), bool)
    tissue_px[:h // b * b, :w // b * b] = np.repeat(np.repeat(share, b, axis=0), b, axis=1)
    return grid.mask(0, h, 0, w, 1.0), tissue_px


@pytest.fixture(scope="module")
def cmu1_pixels(cmu_small_region: Path) -> np.ndarray:
    with open_slide(cmu_small_region) as slide:
        w, h = slide.dimensions
        return slide.read_region(0, 0, w, h, slide.mpp[0])


@pytest.mark.shared
@pytest.mark.parametrize("factor", [1, 2])
def test_sharp_cmu1_has_no_blur(cmu1_pixels: np.ndarray, factor: int) -> None:
    blurred, tissue = blurred_blocks(np.asarray(Image.fromarray(cmu1_pixels).reduce(factor)), 0.5 * factor)
    assert tissue.mean() > 0.2 and not blurred.any()


@pytest.mark.shared
@pytest.mark.parametrize(("sigma", "factor", "min_iou"), [(2, 1, 0.8), (3, 1, 0.8), (4, 1, 0.8), (6, 1, 0.8),
                                                          (4, 2, 0.75), (6, 2, 0.7)])
def test_blurred_regions_of_cmu1_are_found(cmu1_pixels: np.ndarray, sigma: float, factor: int,
                                          min_iou: float) -> None:
    """A disk of CMU-1 (radius 300 um) blurred with sigma px at 0.5 um/px, judged at 0.5 um/px (factor 1)
    and at 1 um/px (factor 2, where the same blur is half as many pixels; sigma 2 there is 1 px, under the
    ~1.2 px the threshold means, and is not flagged)."""
    h, w = cmu1_pixels.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    region = (yy - 1500) ** 2 + (xx - 1100) ** 2 < 600**2
    image = blur_region(cmu1_pixels, region, sigma)
    if factor > 1:
        image = np.asarray(Image.fromarray(image).reduce(factor))
        region = region[::factor, ::factor][:image.shape[0], :image.shape[1]]
    blurred, tissue = blurred_blocks(image, 0.5 * factor)
    truth = region & tissue
    iou = (blurred & truth).sum() / ((blurred | truth) & tissue).sum()
    sharp = tissue & ~region
    assert iou >= min_iou
    assert (blurred & sharp).sum() / sharp.sum() <= 0.03
