"""Quality control on a real slide with known artifacts: pen strokes and a blurred region added to CMU-1.

Draws a red and a green pen stroke (optical density from measured ink colours, ``wsiseg.synthetic.artifacts``)
and blurs a disk (sigma 4 px) of the CC0 OpenSlide test slide CMU-1-Small-Region, runs ``wsiseg qc`` on it
and prints how much of each artifact QC found and how much clean tissue it left alone. The QC overlay
(``<out>/cmu1-artifacts.qc.png``) is the picture in README's "Quality control" section.

    .venv/bin/python examples/qc_pen_and_blur.py OUT_DIR [--slide CMU-1-Small-Region.svs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from wsiseg.cli import main as wsiseg
from wsiseg.qc import QCLabel
from wsiseg.slide import open_slide
from wsiseg.synthetic.artifacts import (
    INK_COLOURS,
    blur_region,
    composite,
    ink_od,
    share_on_grid,
    stroke_density,
)


def make_image(slide_path: Path, out: Path,
               seed: int = 5) -> tuple[Path, float, np.ndarray, np.ndarray, np.ndarray]:
    """CMU-1 with two strokes and a blurred disk as a PNG: (path, mpp, ink truth (OD >= 0.15), any ink at
    all (OD >= 0.02), blurred truth)."""
    with open_slide(slide_path) as slide:
        w, h = slide.dimensions
        mpp = slide.mpp[0]
        rgb = slide.read_region(0, 0, w, h, mpp)
    rng = np.random.default_rng(seed)
    od = np.zeros((h, w, 3), np.float32)
    for name in ("red", "green"):
        density = stroke_density((h, w), mpp, rng, width_um=120.0, edge_um=15.0, n_points=2)
        od += ink_od(density, INK_COLOURS[name], rng)
    yy, xx = np.mgrid[0:h, 0:w]
    disk = (yy - 2350) ** 2 + (xx - 1450) ** 2 < 350**2
    ink, inked = od.sum(axis=-1) >= 0.15, od.sum(axis=-1) >= 0.02
    blurred = disk & ~inked
    image = blur_region(composite(rgb, od), blurred, 4.0)
    path = out / "cmu1-artifacts.png"
    Image.fromarray(image).save(path)
    return path, mpp, ink, inked, blurred


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--slide", type=Path, default=Path("../shared/data/slides/CMU-1-Small-Region.svs"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path, mpp, ink, inked, blurred = make_image(args.slide, args.out)
    try:
        wsiseg(["qc", str(path), "--slide-mpp", str(mpp), "--out", str(args.out), "--blur-mpp", str(mpp),
                "--tile-size", "512", "--quiet"])
    except SystemExit as exc:
        if exc.code:
            raise
    labels = np.asarray(Image.open(args.out / "cmu1-artifacts.qc-labels.png"))
    label_mpp = float(np.round(ink.shape[1] * mpp / labels.shape[1], 6))
    ink_t = share_on_grid(ink, mpp, label_mpp, labels.shape) >= 0.5
    blur_t = share_on_grid(blurred, mpp, label_mpp, labels.shape) >= 0.5
    tissue = labels != QCLabel.BACKGROUND
    pen, blur = labels == QCLabel.PEN, labels == QCLabel.BLUR
    # clean: no ink at all (the faint rim of a stroke, 0.02-0.15 OD, is neither ink nor clean) and sharp
    clean = tissue & (share_on_grid(inked | blurred, mpp, label_mpp, labels.shape) == 0)
    print(f"pen ink found: {(pen & ink_t).sum() / ink_t.sum():.1%} of the ink pixels")
    print(f"blurred tissue found: {(blur & blur_t).sum() / (blur_t & tissue).sum():.1%}")
    print(f"clean tissue left out: {((pen | blur) & clean).sum() / clean.sum():.2%}")
    print(f"overlay: {args.out / 'cmu1-artifacts.qc.png'}")


if __name__ == "__main__":
    run()
