"""Rebuild ``wsiseg/qc/ink_colours.json``, the colour model of the pen-ink detector, from measured pixels.

Real ink comes from the public pen-mark fixtures of two other whole-slide projects, which this script reads
from their checkouts (nothing of them is copied into wsiseg; pass the folders):

- HistoQC (choosehappy/HistoQC, BSD-3-Clause-Clear): ``histoqc/data/pen/1k_version/pen_{red,green,black}.png``
  and ``histoqc/data/models/pen_markings_he/pen_{red,green}.png``, each with a hand-drawn ``*_mask.png``:
  the ink pixels. Their tissue away from the masks (> 10 px) is used as tissue.
- histolab (histolab/histolab, Apache-2.0): ``tests/fixtures/tiles/no-tissue-{red,green}-pen.png`` (ink
  over glass: every coloured pixel is ink, including the dense maroon of overlapping red strokes) and
  ``tests/fixtures/pil-images-rgb/wsi-blue-pen.png`` (blue strokes: blue exceeding red by 40).

H&E tissue comes from the GlaS training images (``--glas DIR/images``; every third pixel of every image),
widened by stain augmentation (per pixel colour deconvolution into hematoxylin, eosin and a residual with
the Ruifrok-Johnston vectors, concentrations scaled by 0.6-2.5 overall and 0.75-1.33 per stain, vectors
perturbed by N(0, 0.05)), so that the model is not one laboratory's stain. Held out, never fitted on:
CMU-1 and GlaS Test A (clean tissue for the false-exclusion figures), histolab's ``tcga-red-pen`` and
``tcga-green-pen`` (red ink beside eosin-rich tissue, green ink over tissue).

Only ink "cores" are taken (red: chromaticity c_red < 0.1 and total OD > 0.4, or total OD > 1.1; green
and blue: c_red > 0.35; black: total OD > 1): the faint, tissue-mixed edges of a stroke are not the ink's
colour, and the detector reaches them by growing from the cores (wsiseg.qc.ink). Ink lies on tissue as
often as on glass, and absorbs on top of it, so every ink class is fitted on its core pixels as they are
and, as many again, with the OD of a random tissue pixel (scaled by 0..1) added: ink over tissue.

    .venv/bin/python benchmarks/qc_colour_model.py --histoqc HISTOQC --histolab HISTOLAB \\
        --glas ../shared/data/glas-full/train/images [--out wsiseg/qc/ink_colours.json]
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from wsiseg.qc.colour import INKS, InkColourModel, colour_features, optical_density

COMPONENTS = {"tissue": 8, "red": 4, "green": 2, "black": 2, "blue": 1}
SAMPLES_PER_CLASS = 60_000
#: Ruifrok & Johnston's H&E(+residual) OD vectors, rows normalised.
_STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _saturation(rgb: np.ndarray) -> np.ndarray:
    top = rgb.max(axis=-1).astype(np.float32)
    return np.asarray((top - rgb.min(axis=-1)) / np.maximum(top, 1))


def ink_and_tissue_pixels(histoqc: Path,
                          histolab: Path) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray]]:
    """RGB pixels ``(n, 3)`` per ink, and tissue pixels, from the two fixture checkouts."""
    inks: dict[str, list[np.ndarray]] = {name: [] for name in INKS}
    tissue: list[np.ndarray] = []
    for name, ink in [("pen/1k_version/pen_red", "red"), ("models/pen_markings_he/pen_red", "red"),
                      ("pen/1k_version/pen_green", "green"), ("models/pen_markings_he/pen_green", "green"),
                      ("pen/1k_version/pen_black", "black")]:
        rgb = _rgb(histoqc / "histoqc/data" / f"{name}.png")
        with Image.open(histoqc / "histoqc/data" / f"{name}_mask.png") as m:
            mask = np.asarray(m.convert("L")) > 0
        inks[ink].append(rgb[mask])
        far = ~ndimage.binary_dilation(mask, iterations=10)
        tissue.append(rgb[far & (_saturation(rgb) > 0.1) & (rgb.max(axis=-1) > 30)])
    for name, ink in [("no-tissue-red-pen", "red"), ("no-tissue-green-pen", "green")]:
        rgb = _rgb(histolab / "tests/fixtures/tiles" / f"{name}.png")
        inks[ink].append(rgb[_saturation(rgb) > 0.15])
    rgb = _rgb(histolab / "tests/fixtures/pil-images-rgb/wsi-blue-pen.png")
    blue = (rgb[..., 2].astype(np.int16) - rgb[..., 0] > 40) & (_saturation(rgb) > 0.2)
    inks["blue"].append(rgb[blue])
    return inks, tissue


def augment_stains(rgb: np.ndarray, rng: np.random.Generator, copies: int) -> np.ndarray:
    """``copies`` stain-augmented versions of tissue pixels ``(n, 3)`` (see the module docstring)."""
    stains = _STAINS / np.linalg.norm(_STAINS, axis=1, keepdims=True)
    concentrations = optical_density(rgb).astype(np.float64) @ np.linalg.inv(stains)
    out = []
    for _ in range(copies):
        scale = rng.uniform(0.6, 2.5) * rng.uniform(0.75, 1.33, 3)
        scale[2] = rng.uniform(0.8, 1.2)
        vectors = stains + rng.normal(0.0, 0.05, stains.shape)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        od = (concentrations * scale) @ vectors
        out.append(np.clip(255.0 * 10.0 ** -od, 0, 255).astype(np.uint8))
    return np.concatenate(out)


def _core(name: str, features: np.ndarray) -> np.ndarray:
    c_red, log_total = features[:, 0], features[:, 2]
    if name == "red":
        return np.asarray(((c_red < 0.1) & (log_total > np.log10(0.4))) | (log_total > np.log10(1.1)))
    if name in ("green", "blue"):
        return np.asarray(c_red > 0.35)
    if name == "black":
        return np.asarray(log_total > 0.0)
    return np.ones(len(features), bool)


def samples(inks: dict[str, list[np.ndarray]], tissue: list[np.ndarray], glas: Path,
            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Feature samples per class (visible pixels, total OD > 0.15; ink cores only), at most
    :data:`SAMPLES_PER_CLASS` each."""
    glas_pixels = [_rgb(p)[::3, ::3].reshape(-1, 3) for p in sorted(glas.glob("*.png"))]
    pool = np.concatenate([*tissue, *glas_pixels])
    pool = pool[_saturation(pool) > 0.07]
    pool = pool[rng.choice(len(pool), min(len(pool), SAMPLES_PER_CLASS), replace=False)]
    tissue_rgb = np.concatenate([pool, augment_stains(pool, rng, 6)])
    tissue_od = optical_density(tissue_rgb)
    out = {"tissue": _visible(colour_features(tissue_od)[0], rng)}
    for name, parts in inks.items():
        od = optical_density(np.concatenate(parts))
        od = od[_core(name, colour_features(od)[0])]
        under = tissue_od[rng.integers(0, len(tissue_od), len(od))] * rng.uniform(0, 1, (len(od), 1))
        out[name] = _visible(colour_features(np.concatenate([od, od + under]))[0], rng)
    for name, features in out.items():
        print(f"{name:7s} {len(features):6d} samples")
    return out


def _visible(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Visible samples (total OD > 0.15), at most :data:`SAMPLES_PER_CLASS` of them."""
    features = features[features[:, 2] > np.log10(0.15)]
    return features[rng.choice(len(features), min(len(features), SAMPLES_PER_CLASS), replace=False)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--histoqc", type=Path, required=True, help="a checkout of choosehappy/HistoQC")
    parser.add_argument("--histolab", type=Path, required=True, help="a checkout of histolab/histolab")
    parser.add_argument("--glas", type=Path, required=True, help="the GlaS training images folder")
    parser.add_argument("--out", type=Path, default=Path("wsiseg/qc/ink_colours.json"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    inks, tissue = ink_and_tissue_pixels(args.histoqc, args.histolab)
    data = samples(inks, tissue, args.glas, rng)
    provenance = {
        "fitted": datetime.date.today().isoformat(), "script": "benchmarks/qc_colour_model.py",
        "seed": args.seed, "components": COMPONENTS, "samples": {k: len(v) for k, v in data.items()},
        "ink": "HistoQC pen fixtures with masks (red, green, black); histolab no-tissue red/green pen tiles, "
               "wsi-blue-pen (blue); cores as they are and over random tissue (OD added)",
        "tissue": "GlaS training images + HistoQC fixture tissue, stain-augmented x6",
        "held_out": "CMU-1, GlaS Test A, histolab tcga-red-pen and tcga-green-pen",
    }
    model = InkColourModel.fit(data, COMPONENTS, seed=args.seed, provenance=provenance)
    args.out.write_text(model.to_json() + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
