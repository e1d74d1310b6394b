"""Artifacts with exact ground truth on real or synthetic images: pen strokes composited in optical density
from measured ink colours, dark neutral lines (coverslip edges, air-bubble rims), and Gaussian blur of known
regions. What the QC tests and
``benchmarks/bench_qc.py`` measure detection against.

Ink on a slide absorbs on top of the tissue under it, so a stroke is added in optical density (OD): the
composite's OD is the image's OD plus the ink's (Beer-Lambert), and its RGB ``255 * 10**-od``. A stroke
is a smooth random curve ``width_um`` wide whose density is flat across its core, falls off at its edges
like a marker's (a Gaussian edge of ``edge_um``) and varies slowly along it (the pen running dry, pressure).
The truth is every pixel where the ink's total OD is at least :data:`VISIBLE_INK` (visible ink).

Ink colours (:data:`INK_COLOURS`): the median OD direction and the 10th-90th percentile of total OD of ink
pixels of public pen-mark fixtures, measured with ``wsiseg.qc.colour.optical_density``:

- red: histolab ``tests/fixtures/pil-images-rgb/tcga-red-pen.png``, the stroke's core (R > 150, G < 60,
  B < 80; 31 223 pixels) -- not used to fit the detector's colour model;
- green: histolab ``tests/fixtures/tiles/no-tissue-green-pen.png`` (saturation > 0.3; 177 726 pixels);
- blue: histolab ``tests/fixtures/pil-images-rgb/wsi-blue-pen.png`` (B - R > 60; 556 pixels);
- black: HistoQC ``histoqc/data/pen/1k_version/pen_black.png`` with its mask (230 937 pixels).

Green, blue and black come from images the colour model was also fitted on (they are the only public
sources found with those inks), red does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Total ink OD from which ink counts as visible (the truth of the composites).
VISIBLE_INK = 0.15


@dataclass(frozen=True)
class InkColour:
    """A measured ink: its OD direction (R, G, B; sums to 1) and the 10th-90th percentile of its total OD."""

    name: str
    direction: tuple[float, float, float]
    density: tuple[float, float]


INK_COLOURS: dict[str, InkColour] = {
    "red": InkColour("red", (0.048, 0.481, 0.464), (1.6, 2.7)),
    "green": InkColour("green", (0.600, 0.174, 0.227), (0.6, 1.17)),
    "blue": InkColour("blue", (0.571, 0.325, 0.104), (0.42, 1.11)),
    "black": InkColour("black", (0.304, 0.326, 0.370), (1.97, 3.8)),
}


def stroke_density(shape: tuple[int, int], mpp: float, rng: np.random.Generator, *, width_um: float = 500.0,
                   edge_um: float = 25.0, n_points: int = 5) -> np.ndarray:
    """Relative density 0..1 (float32 ``shape``) of one random pen stroke across an image of ``mpp`` um/px:
    a smooth curve through ``n_points`` random points, ``width_um`` wide, Gaussian edges of ``edge_um``,
    +-25 % slow variation along it. Drawn on a grid of ``edge_um / 4`` (at least ``mpp``) and resized
    bilinearly, so a large image costs what a small one does."""
    h, w = shape
    step = max(mpp, edge_um / 4.0)  # um per pixel of the drawing grid
    ch, cw = max(2, round(h * mpp / step)), max(2, round(w * mpp / step))
    points = rng.uniform([0.1 * cw, 0.1 * ch], [0.9 * cw, 0.9 * ch], size=(n_points, 2))
    t = np.linspace(0.0, 1.0, 64 * n_points)
    knots = np.linspace(0.0, 1.0, n_points)
    curve = np.stack([np.interp(t, knots, points[:, 0]), np.interp(t, knots, points[:, 1])], axis=1)
    smooth = max(1, len(t) // n_points // 2)
    curve = np.stack([ndimage.uniform_filter1d(curve[:, i], smooth, mode="nearest") for i in range(2)],
                     axis=1)
    outside = np.ones((ch, cw), bool)
    outside[np.clip(np.round(curve[:, 1]).astype(int), 0, ch - 1),
            np.clip(np.round(curve[:, 0]).astype(int), 0, cw - 1)] = False
    inside = ndimage.distance_transform_edt(outside) * step <= width_um / 2
    density = ndimage.gaussian_filter(inside.astype(np.float32), edge_um / step)
    along = ndimage.gaussian_filter(rng.normal(1.0, 0.25, (ch, cw)).astype(np.float32), 200.0 / step)
    along = 1.0 + (along - along.mean()) * (0.25 / max(float(along.std()), 1e-6))
    coarse = np.clip(density * along, 0.0, 1.0)
    full = ndimage.zoom(coarse, (h / ch, w / cw), order=1, mode="nearest", grid_mode=True)
    return np.asarray(full[:h, :w], dtype=np.float32)


#: Neutral (grey) absorbers, what a coverslip edge or a bubble's rim looks like in a scan, with the total OD
#: ranges the benchmark composites them at (not measured: no public fixture with a ground truth was found).
COVERSLIP_EDGE = InkColour("coverslip edge", (1 / 3, 1 / 3, 1 / 3), (0.6, 1.5))
BUBBLE_RIM = InkColour("bubble rim", (1 / 3, 1 / 3, 1 / 3), (0.5, 1.2))


def _band(distance_um: np.ndarray, width_um: float, edge_um: float) -> np.ndarray:
    """Relative density 0..1 (float32) at ``distance_um`` from a band's centre line: a flat core
    ``width_um`` wide with linear edges of ``edge_um``."""
    return np.asarray(np.clip(1 - (distance_um - width_um / 2) / edge_um, 0, 1), dtype=np.float32)


def line_density(shape: tuple[int, int], mpp: float, rng: np.random.Generator, *,
                 width_um: float, edge_um: float = 3.0) -> np.ndarray:
    """Relative density 0..1 (float32 ``shape``) of a straight line across an image of ``mpp`` um/px (a
    coverslip edge): random angle, through a random point of the image's middle 40 %, ``width_um`` wide
    with a flat core and linear edges of ``edge_um``."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    return _band(np.abs((yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)) * mpp, width_um, edge_um)


def ring_density(shape: tuple[int, int], mpp: float, rng: np.random.Generator, *,
                 width_um: float, edge_um: float = 3.0) -> np.ndarray:
    """Relative density 0..1 (float32 ``shape``) of a circle's rim (an air bubble's): radius 25-40 % of the
    shorter side, centred in the image's middle 20 %, ``width_um`` wide with linear edges of ``edge_um``."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    radius = rng.uniform(0.25, 0.4) * min(h, w)
    cy, cx = rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w
    return _band(np.abs(np.hypot(yy - cy, xx - cx) - radius) * mpp, width_um, edge_um)


def ink_od(density: np.ndarray, colour: InkColour, rng: np.random.Generator) -> np.ndarray:
    """The OD ``(h, w, 3)`` float32 of ink of ``colour`` laid with relative ``density`` (0..1): a total OD
    drawn from the colour's measured range, times the density."""
    total = float(rng.uniform(*colour.density))
    return (density[..., None] * total * np.asarray(colour.direction, np.float32)).astype(np.float32)


def composite(rgb: np.ndarray, od: np.ndarray) -> np.ndarray:
    """``rgb`` (uint8 ``(h, w, 3)``) with extra optical density ``od`` added (Beer-Lambert)."""
    base = np.log10(255.0 / np.maximum(rgb.astype(np.float32), 1.0))
    return np.asarray(np.clip(255.0 * 10.0 ** -(base + od), 0, 255).round(), dtype=np.uint8)


def ink_truth(od: np.ndarray) -> np.ndarray:
    """Where composited ink is visible: total OD >= :data:`VISIBLE_INK` (bool ``(h, w)``)."""
    return np.asarray(np.sum(od, axis=-1) >= VISIBLE_INK, dtype=bool)


def blur_region(rgb: np.ndarray, region: np.ndarray, sigma_px: float) -> np.ndarray:
    """``rgb`` with the pixels of ``region`` replaced by their Gaussian blur of ``sigma_px`` (the whole image
    blurred, then cut in: the region's edge is as sharp as a focus change between scan strips)."""
    blurred = np.stack([ndimage.gaussian_filter(rgb[..., c].astype(np.float32), sigma_px) for c in range(3)],
                       axis=-1)
    return np.asarray(np.where(region[..., None], np.clip(blurred.round(), 0, 255), rgb), dtype=np.uint8)


def share_on_grid(mask: np.ndarray, mpp: float, grid_mpp: float, shape: tuple[int, int]) -> np.ndarray:
    """The share (float64 ``shape``) of the True pixels of ``mask`` (at ``mpp`` um/px) under each pixel of a
    coarser grid of ``grid_mpp`` um/px and ``shape`` (e.g. a QC thumbnail), both from (0, 0): how a
    full-resolution truth is scored on the grid a detector works on."""
    h, w = shape
    factor = grid_mpp / mpp
    rows = np.minimum((np.arange(mask.shape[0]) / factor).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(mask.shape[1]) / factor).astype(np.int64), w - 1)
    counts = np.zeros(shape)
    totals = np.zeros(shape)
    np.add.at(counts, (rows[:, None], cols[None, :]), mask)
    np.add.at(totals, (rows[:, None], cols[None, :]), 1)
    return counts / np.maximum(totals, 1)
