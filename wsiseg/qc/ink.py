"""Pen and marker ink on a slide thumbnail: colour evidence (:mod:`wsiseg.qc.colour`) decided spatially.

Evidence per pixel: the log likelihood ratio of ink over tissue under the measured colour model, with the
image's own tissue as a second tissue model (``adapt``; :func:`_evidence`).

Colour alone cannot separate every ink pixel from every tissue pixel: the faint edge of a red stroke has the
colour of eosin-rich stroma, and dense overlapping strokes turn maroon. Ink differs from tissue in how its
evidence is arranged: a stroke has a core whose colour only ink has. So:

1. candidates: visible pixels (total OD > 0.15, averaged over ``smooth_um``) more likely ink (of their most
   likely colour) than tissue (log likelihood ratio > 0);
2. regions of connected candidates are kept when they are at least ``min_area_um2`` large and hold strong
   evidence (ratio > ``strong_log_ratio``) over ``strong_share`` of that area, and a strong pixel that is
   credible: red ink needs a dense core (total OD >= ``red_min_density`` averaged over
   ``density_window_um``), which red ink has and eosin never reaches;
3. the strong pixels of kept regions grow up to ``grow_um`` into connected pixels with some evidence of ink
   (ratio > ``grow_log_ratio``) or too pale to be much tissue (total OD < ``faint_density``): the stroke's
   edges and halo, but not the weak evidence further on (dense hematoxylin next to a stroke can lean
   towards ink without being it);

then holes inside ink smaller than ``max_hole_um2`` are filled and the ink widened by ``margin_um``.
Memory: the per-pixel evidence is computed in strips of rows and kept as int8 (4 bytes per pixel) plus the
total OD (4 bytes per pixel).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import ndimage

from wsiseg.errors import ConfigError
from wsiseg.qc.colour import INKS, GaussianMixture, InkColourModel, colour_features, optical_density
from wsiseg.qc.settings import PenSettings
from wsiseg.slide import morphology

#: Total OD below which a pixel is glass (no colour to judge).
VISIBLE_DENSITY = 0.15
#: The image's own tissue model (``pen.adapt``): components, at most this many samples, at least this many.
OWN_COMPONENTS = 3
OWN_SAMPLES = 20_000
OWN_MIN_SAMPLES = 500
_STRIP_ROWS = 256


def _features(rgb: np.ndarray, mpp: float,
              smooth_um: float) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(y, y1, features (y1 - y, w, 3), total (y1 - y, w))`` of strips of rows, of the OD averaged over
    ``smooth_um``."""
    h = rgb.shape[0]
    window = max(1, round(smooth_um / mpp))
    halo = window // 2 + 1
    for y in range(0, h, _STRIP_ROWS):
        y1 = min(h, y + _STRIP_ROWS)
        top, bottom = max(0, y - halo), min(h, y1 + halo)
        od = optical_density(rgb[top:bottom])
        if window > 1:
            od = ndimage.uniform_filter(od, size=(window, window, 1), mode="nearest")
        features, total = colour_features(od[y - top:y1 - top])
        yield y, y1, features, total


def _evidence(rgb: np.ndarray, mpp: float, model: InkColourModel, settings: PenSettings,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(ratios int8 (h, w, len(INKS)), total float32 (h, w))``: per ink the log likelihood ratio of ink over
    tissue (rounded, clipped to +-127) and the total OD, of the OD averaged over ``settings.smooth_um``.

    With ``settings.adapt``, the tissue of this very image also counts as tissue: a small mixture
    (:data:`OWN_COMPONENTS`) is fitted to the visible pixels the model calls tissue (ratio <= 0 for every
    ink) that lie farther than ``grow_um`` from any region the strong evidence alone makes ink (a stroke's
    faint edge over tissue reads as tissue, and would teach this model the ink: blue recall on GlaS rose
    from 0.74 to 0.78, black from 0.86 to 0.92, green from 0.89 to 0.95); a fixed-seed sample of at most
    :data:`OWN_SAMPLES`. For the others the tissue likelihood is
    the larger of the model's and this one's. A slide whose stain the model's tissue does not cover then
    does not read as ink, while ink, which the sample leaves out, still does."""
    h, w = rgb.shape[:2]
    ratios = np.empty((h, w, len(INKS)), np.int8)
    total = np.empty((h, w), np.float32)
    for y, y1, features, strip_total in _features(rgb, mpp, settings.smooth_um):
        total[y:y1] = strip_total
        r = model.log_ratios(features.reshape(-1, 3)).reshape(y1 - y, w, len(INKS))
        ratios[y:y1] = np.clip(np.round(r), -127, 127).astype(np.int8)
    if settings.adapt:
        _adapt(rgb, mpp, model, settings, ratios, total, seed)
    return ratios, total


def _adapt(rgb: np.ndarray, mpp: float, model: InkColourModel, settings: PenSettings, ratios: np.ndarray,
           total: np.ndarray, seed: int) -> None:
    """Rescore, in place, the pixels that read as ink against this image's own tissue (see
    :func:`_evidence`)."""
    visible = total > VISIBLE_DENSITY
    top = ratios.max(axis=2)
    suspect = visible & (top > 0)
    # the tissue sample keeps away from regions the strong evidence alone already calls ink: a stroke's faint
    # edges, over tissue, read as tissue by the model's ratio and would teach the image's own model the ink
    inked = _regions_kept(suspect, suspect & (top > settings.strong_log_ratio), suspect, mpp * mpp, settings)
    near_ink = morphology.dilate(inked, settings.grow_um / mpp)
    tissue_like = visible & (top <= 0) & ~near_ink
    if tissue_like.sum() < OWN_MIN_SAMPLES or not suspect.any():
        return
    rng = np.random.default_rng(seed)
    samples, rescored = [], []
    for y, y1, features, _ in _features(rgb, mpp, settings.smooth_um):
        samples.append(features[tissue_like[y:y1]])
        rescored.append(features[suspect[y:y1]])
    pool = np.concatenate(samples)
    pool = pool[rng.choice(len(pool), min(len(pool), OWN_SAMPLES), replace=False)]
    try:
        own = GaussianMixture.fit(pool, OWN_COMPONENTS, seed=seed, iterations=100)
    except (ConfigError, np.linalg.LinAlgError):  # too few distinct colours to fit: keep the model's
        return
    r = model.log_ratios(np.concatenate(rescored), own_tissue=own)
    ratios[suspect] = np.clip(np.round(r), -127, 127).astype(np.int8)


def _regions_kept(candidates: np.ndarray, strong: np.ndarray, credible: np.ndarray, px_um2: float,
                  settings: PenSettings) -> np.ndarray:
    """The connected regions of ``candidates`` that are large enough and hold enough ``strong`` pixels of
    which at least one is ``credible``, as a bool mask."""
    labels, n = ndimage.label(candidates)
    if n == 0:
        return np.zeros(candidates.shape, bool)
    area = np.bincount(labels.ravel(), minlength=n + 1) * px_um2
    strong_area = np.bincount(labels[strong], minlength=n + 1) * px_um2
    keep = (area >= settings.min_area_um2) & (strong_area >= settings.strong_share * settings.min_area_um2)
    keep &= np.bincount(labels[strong & credible], minlength=n + 1) > 0
    keep[0] = False
    return np.asarray(keep[labels])


def _grow(seed: np.ndarray, passable: np.ndarray, radius_px: float) -> np.ndarray:
    """``seed`` plus the pixels of ``passable`` within ``radius_px`` of it that connect to it."""
    reach = morphology.dilate(seed, radius_px) & (passable | seed)
    labels, _ = ndimage.label(reach)
    touched = np.unique(labels[seed])
    return np.isin(labels, touched[touched > 0])


def _fill_holes(mask: np.ndarray, max_hole_px: float) -> np.ndarray:
    holes, n = ndimage.label(~mask)
    if n == 0:
        return mask
    small = np.bincount(holes.ravel(), minlength=n + 1) < max_hole_px
    small[0] = False
    small[np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))] = False
    return np.asarray(mask | small[holes])


def detect_ink(rgb: np.ndarray, mpp: float, model: InkColourModel, settings: PenSettings) -> np.ndarray:
    """The pen-ink mask (bool ``(h, w)``) of an RGB uint8 thumbnail ``(h, w, 3)`` at ``mpp`` um/px (see the
    module docstring)."""
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        return np.zeros((h, w), bool)
    ratios, total = _evidence(rgb, mpp, model, settings)
    visible = total > VISIBLE_DENSITY
    best = ratios.argmax(axis=2)
    top = ratios.max(axis=2)
    candidates = visible & (top > 0)
    if not candidates.any():
        return np.zeros((h, w), bool)
    window = max(1, round(settings.density_window_um / mpp))
    dense = ndimage.uniform_filter(total, window, mode="nearest") >= settings.red_min_density
    red = INKS.index("red")
    strong = candidates & (top > settings.strong_log_ratio)
    credible = candidates & ((best != red) | dense)
    seed = np.asarray(_regions_kept(candidates, strong, credible, mpp * mpp, settings) & strong)
    if not seed.any():
        return seed
    passable = visible & ((top > settings.grow_log_ratio) | (total < settings.faint_density))
    ink = _fill_holes(_grow(seed, passable, settings.grow_um / mpp), settings.max_hole_um2 / (mpp * mpp))
    return morphology.dilate(ink, settings.margin_um / mpp)
