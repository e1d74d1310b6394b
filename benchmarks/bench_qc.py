"""Benchmark the QC stage (issue 22): pen ink and blur found on real tissue with exact ground truth, clean
tissue left alone, and what QC costs. Prints figures (JSON lines) and a summary.

1. Ink: one pen stroke per image and ink colour, composited in optical density from measured ink colours
   (``wsiseg.synthetic.artifacts``) over CMU-1 (the whole image; strokes 150-400 um wide) and the 60 GlaS
   Test A images (strokes 20-35 % of the shorter side, ~65-110 um: a full pen stroke would cover a GlaS
   image), each written as a one-level slide and assessed exactly as ``segment`` does (``assess_slide``, the
   thumbnail of ``thumbnail_mpp``). Truth: ink pixels = ink OD >= 0.15; clean tissue = tissue (detected on
   the image without ink) with no ink at all (OD < 0.02), so the faint rim between the two counts as
   neither. Figures: share of ink pixels excluded and of clean tissue excluded, per image and pooled.
2. Pure ink over glass: the same strokes on a white image; the share of the image left as analysable tissue.
   With ``--fixtures DIR`` (a histolab checkout), also its real pen-over-glass tiles ``no-tissue-*-pen``
   (which the colour model was fitted on: in-sample) and the held-out ``tcga-red-pen``/``tcga-green-pen``.
3. Blur: a disk of CMU-1 (radius 300 um) blurred with sigma 2, 3, 4, 6 px at 0.5 um/px, judged at 0.5 and
   1.0 um/px on 512 px tiles: IoU of the blurred blocks with the blurred tissue, share of sharp tissue
   flagged.
4. Clean slides: CMU-1, the 60 GlaS images and two synthetic slides: tissue after QC against tissue
   detected (the same before QC), and the analysable share lost.
5. Lines: a coverslip edge (a straight line 15-40 um wide) and an air bubble's rim (a circle's, 10-25 um
   wide), each a neutral grey absorber (total OD 0.6-1.5 and 0.5-1.2) composited over every image. No
   detector is built for them: this measures what the stage does with them. Figures: share of the line's
   pixels over tissue excluded (as ink) and left analysed; share of the line over glass made analysable;
   clean tissue (no line within reach) lost.
6. Speed: the QC of a 512 px image at 0.5 um/px; ``segment --model null`` (1024 px tiles at 0.5 um/px, the
   worst case: nothing hides the focus check's CPU) on a ``--size`` synthetic slide with and without QC
   (alternating, median of ``--pairs`` ratios); ``--model`` times a real model instead (there the model's
   own time hides the focus check, which runs in the reader threads).

    .venv/bin/python benchmarks/bench_qc.py [--shared ../shared/data] [--fixtures HISTOLAB] [--seed 0]
        [--sections ink,pure,blur,clean,lines,speed] [--glas-every 1] [--pairs 3] [--size 20480]
        [--model FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wsiseg.qc import FocusGrid, QCLabel, QCSettings, assess_slide, block_size
from wsiseg.qc.assess import tissue_of
from wsiseg.slide import open_slide
from wsiseg.synthetic.artifacts import (
    BUBBLE_RIM,
    COVERSLIP_EDGE,
    INK_COLOURS,
    blur_region,
    composite,
    ink_od,
    line_density,
    ring_density,
    share_on_grid,
    stroke_density,
)
from wsiseg.synthetic.slides import write_synthetic_slide

#: Ink OD below which a pixel has no ink at all (clean).
NO_INK = 0.02
#: Ink OD from which a pixel is ink (the truth).
INK = 0.15


def _images(shared: Path, every: int) -> Iterator[tuple[str, np.ndarray, float, tuple[float, float]]]:
    """(name, RGB, mpp, stroke width range um) of CMU-1 and the GlaS Test A images."""
    with open_slide(shared / "slides/CMU-1-Small-Region.svs") as slide:
        w, h = slide.dimensions
        yield "CMU-1", slide.read_region(0, 0, w, h, slide.mpp[0]), slide.mpp[0], (150.0, 400.0)
    for path in sorted((shared / "glas-full/testA/images").glob("*.png"))[::every]:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        side = min(rgb.shape[:2]) * 0.62
        yield path.stem, rgb, 0.62, (0.2 * side, 0.35 * side)


def _assess(rgb: np.ndarray, mpp: float, work: Path, settings: QCSettings) -> tuple[Any, float]:
    """QC of ``rgb`` written as a one-level slide, as ``segment`` does it: (QCMap, thumbnail mpp)."""
    path = work / "image.png"
    Image.fromarray(rgb).save(path)
    with open_slide(path, mpp=mpp) as slide:
        qc_map, _ = assess_slide(slide, settings)
    return qc_map, qc_map.mpp


def bench_ink(shared: Path, settings: QCSettings, seed: int, every: int, work: Path) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    pooled: dict[str, list[float]] = {}
    worst_fp, worst_recall = 0.0, 1.0
    per_image = []
    for name, rgb, mpp, widths in _images(shared, every):
        clean_map, _ = _assess(rgb, mpp, work, settings)
        for colour in INK_COLOURS.values():
            density = stroke_density(rgb.shape[:2], mpp, rng, width_um=float(rng.uniform(*widths)),
                                     edge_um=15.0, n_points=3)
            od = ink_od(density, colour, rng)
            qc_map, _ = _assess(composite(rgb, od), mpp, work, settings)
            pen = qc_map.labels == QCLabel.PEN
            total = od.sum(axis=-1)
            shape = qc_map.labels.shape
            ink = share_on_grid(total >= INK, mpp, qc_map.mpp, shape) >= 0.5
            clean = clean_map.tissue & (share_on_grid(total >= NO_INK, mpp, qc_map.mpp, shape) == 0)
            counts = pooled.setdefault(colour.name, [0, 0, 0, 0])
            counts[0] += int((pen & ink).sum())
            counts[1] += int(ink.sum())
            counts[2] += int((pen & clean).sum())
            counts[3] += int(clean.sum())
            recall = float((pen & ink).sum() / max(ink.sum(), 1))
            fp = float((pen & clean).sum() / max(clean.sum(), 1))
            per_image.append((name, colour.name, recall, fp))
            worst_recall, worst_fp = min(worst_recall, recall), max(worst_fp, fp)
    shares = sorted(fp for *_, fp in per_image)
    recalls = sorted(r for _, _, r, _ in per_image)
    return {"section": "ink", "images": len(per_image) // len(INK_COLOURS),
            "pooled_ink_excluded": {c: round(v[0] / max(v[1], 1), 4) for c, v in pooled.items()},
            "pooled_clean_excluded": {c: round(v[2] / max(v[3], 1), 4) for c, v in pooled.items()},
            "per_image_ink_excluded_p10_median": [round(recalls[len(recalls) // 10], 4),
                                                  round(statistics.median(recalls), 4)],
            "per_image_clean_excluded_median_p90": [round(statistics.median(shares), 4),
                                                    round(shares[9 * len(shares) // 10], 4)],
            "worst_image": {"ink_excluded": round(worst_recall, 4), "clean_excluded": round(worst_fp, 4)},
            "per_image_meeting_both_targets": round(sum(1 for *_, r, f in per_image if r >= 0.9 and f <= 0.02)
                                                    / len(per_image), 3)}


def bench_lines(shared: Path, settings: QCSettings, seed: int, every: int, work: Path) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    kinds = {"coverslip_edge": (line_density, (15.0, 40.0), COVERSLIP_EDGE),
             "bubble_rim": (ring_density, (10.0, 25.0), BUBBLE_RIM)}
    counts = {kind: np.zeros(7) for kind in kinds}
    excluded_images = dict.fromkeys(kinds, 0)
    n_images = 0
    for _, rgb, mpp, _ in _images(shared, every):
        n_images += 1
        clean_map, _ = _assess(rgb, mpp, work, settings)
        for kind, (draw, widths, absorber) in kinds.items():
            density = draw(rgb.shape[:2], mpp, rng, width_um=float(rng.uniform(*widths)))
            od = ink_od(density, absorber, rng)
            qc_map, _ = _assess(composite(rgb, od), mpp, work, settings)
            shape = qc_map.labels.shape
            line = share_on_grid(density >= 0.5, mpp, qc_map.mpp, shape) >= 0.5
            clean = (share_on_grid(density > 0.01, mpp, qc_map.mpp, shape) == 0) & clean_map.tissue
            analysable = qc_map.labels == QCLabel.TISSUE
            pen = qc_map.labels == QCLabel.PEN
            over_tissue, over_glass = line & clean_map.tissue, line & ~clean_map.tissue
            counts[kind] += [(pen & over_tissue).sum(), (analysable & over_tissue).sum(), over_tissue.sum(),
                             (analysable & over_glass).sum(), over_glass.sum(), (~analysable & clean).sum(),
                             clean.sum()]
            excluded_images[kind] += int((pen & over_tissue).sum() > 0.5 * over_tissue.sum())
    out: dict[str, Any] = {"section": "lines", "images": n_images}
    for kind, c in counts.items():
        out[kind] = {"over_tissue_excluded": round(c[0] / max(c[2], 1), 4),
                     "over_tissue_analysed": round(c[1] / max(c[2], 1), 4),
                     "images_mostly_excluded": excluded_images[kind],
                     "over_glass_made_analysable": round(c[3] / max(c[4], 1), 4),
                     "clean_tissue_lost": round(c[5] / max(c[6], 1), 4)}
    return out


def bench_pure(settings: QCSettings, seed: int, fixtures: Path | None, work: Path) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"section": "pure"}
    white = np.full((1536, 1536, 3), 242, np.uint8)
    for colour in INK_COLOURS.values():
        left = []
        for _ in range(3):
            od = ink_od(stroke_density(white.shape[:2], 2.0, rng, width_um=float(rng.uniform(300, 800))),
                        colour, rng)
            qc_map, _ = _assess(composite(white, od), 2.0, work, settings)
            left.append(float((qc_map.labels == QCLabel.TISSUE).mean()))
        out[f"synthetic_{colour.name}_tissue_left"] = round(max(left), 4)
    if fixtures is not None:
        for name in ("tiles/no-tissue-red-pen", "tiles/no-tissue-green-pen", "pil-images-rgb/tcga-red-pen",
                     "pil-images-rgb/tcga-green-pen"):
            path = fixtures / "tests/fixtures" / f"{name}.png"
            with open_slide(path, mpp=8.0) as slide:
                qc_map, _ = assess_slide(slide, settings)
            out[f"histolab_{Path(name).name}"] = {
                "tissue_detected": round(float(qc_map.tissue.mean()), 4),
                "analysable_after_qc": round(float((qc_map.labels == QCLabel.TISSUE).mean()), 4)}
    return out


def bench_blur(shared: Path, settings: QCSettings) -> dict[str, Any]:
    with open_slide(shared / "slides/CMU-1-Small-Region.svs") as slide:
        w, h = slide.dimensions
        base = slide.read_region(0, 0, w, h, slide.mpp[0])
    yy, xx = np.mgrid[0:h, 0:w]
    region = (yy - 1500) ** 2 + (xx - 1100) ** 2 < 600**2
    out: dict[str, Any] = {"section": "blur"}
    for factor in (1, 2):
        for sigma in (0, 2, 3, 4, 6):
            image = blur_region(base, region, sigma) if sigma else base
            if factor > 1:
                image = np.asarray(Image.fromarray(image).reduce(factor))
            reg = region[::factor, ::factor][:image.shape[0], :image.shape[1]]
            blurred, tissue = _blurred_blocks(image, 0.5 * factor, settings)
            truth = reg & tissue
            iou = float((blurred & truth).sum() / max(((blurred | truth) & tissue).sum(), 1))
            sharp = tissue & ~reg
            out[f"{0.5 * factor}um_sigma{sigma}"] = {"iou": round(iou, 4) if sigma else None,
                                                    "sharp_flagged": round(float((blurred & sharp).sum()
                                                                                 / max(sharp.sum(), 1)), 4)}
    return out


def _blurred_blocks(image: np.ndarray, mpp: float, settings: QCSettings,
                    tile: int = 512, overlap: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Blurred pixels (FocusGrid over 512 px tiles) and tissue pixels (blocks with >= half tissue)."""
    h, w = image.shape[:2]
    step = tile - overlap
    n_cols, n_rows = -(-(w - overlap) // step), -(-(h - overlap) // step)
    grid = FocusGrid(block_size(step, mpp, settings.blur.block_um), step, tile, n_cols, n_rows, settings.blur)
    padded = np.full(((n_rows - 1) * step + tile, (n_cols - 1) * step + tile, 3), 255, np.uint8)
    padded[:h, :w] = image
    for row in range(n_rows):
        for col in range(n_cols):
            grid.measure(col, row, padded[row * step:row * step + tile, col * step:col * step + tile])
    tissue = np.minimum(np.minimum(image[..., 0], image[..., 1]), image[..., 2]) < 215
    b = grid.block
    tb = tissue[:h // b * b, :w // b * b].reshape(h // b, b, w // b, b).mean(axis=(1, 3)) >= 0.5
    tissue_px = np.zeros((h, w), bool)
    tissue_px[:h // b * b, :w // b * b] = np.repeat(np.repeat(tb, b, axis=0), b, axis=1)
    return grid.mask(0, h, 0, w, 1.0), tissue_px


def bench_clean(shared: Path | None, settings: QCSettings, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"section": "clean"}
    worst = 0.0
    names = []
    if shared is not None:
        for name, rgb, mpp, _ in _images(shared, 1):
            qc_map, _ = _assess(rgb, mpp, work, settings)
            lost = float(1 - (qc_map.labels == QCLabel.TISSUE).sum() / max(qc_map.tissue.sum(), 1))
            worst = max(worst, lost)
            names.append(name)
    for seed in (0, 1):
        path = work / f"synthetic{seed}.svs"
        write_synthetic_slide(path, 6144, 4096, seed=seed)
        with open_slide(path) as slide:
            qc_map, thumb = assess_slide(slide, settings)
            unchanged = np.array_equal(qc_map.tissue, tissue_of(thumb, qc_map.mpp, settings.tissue))
        lost = float(1 - (qc_map.labels == QCLabel.TISSUE).sum() / max(qc_map.tissue.sum(), 1))
        out[f"synthetic{seed}"] = {"tissue_lost_to_qc": round(lost, 5), "tissue_mask_as_before": unchanged}
    out["real_images"] = len(names)
    out["worst_real_tissue_lost_to_qc"] = round(worst, 5)
    return out


def bench_speed(settings: QCSettings, pairs: int, size: int, model_path: Path | None,
                work: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal(200, 30, (512, 512, 3)), 0, 255).astype(np.uint8)
    path = work / "small.png"
    Image.fromarray(rgb).save(path)
    with open_slide(path, mpp=0.5) as slide:
        assess_slide(slide, settings)  # warm-up
        t0 = time.perf_counter()
        assess_slide(slide, settings)
        small = time.perf_counter() - t0
    slide_path = work / "segment.svs"
    write_synthetic_slide(slide_path, size, size, seed=3)
    from wsiseg.infer.cohort import NULL_MODEL, ModelSpec
    from wsiseg.infer.options import SegmentOptions
    from wsiseg.infer.segment import segment_slide
    from wsiseg.qc import QCMode

    if model_path is None:
        model = ModelSpec(NULL_MODEL, "cpu", mpp=0.5, tile_size=1024).build()
        geometry: dict[str, Any] = {}
    else:
        from wsiseg.model import load_model

        model = load_model(model_path, device="cpu")
        geometry = {"mpp": 1.0, "tile_size": 512}
    walls: dict[str, list[float]] = {"off": [], "default": []}
    for i in range(pairs):
        for mode in ("off", "default"):
            options = SegmentOptions(qc=QCMode(mode), overwrite=True, preview=False, **geometry)
            t0 = time.perf_counter()
            segment_slide(slide_path, model, work / f"seg-{mode}-{i}.zarr", options, progress=False)
            walls[mode].append(time.perf_counter() - t0)
    ratios = [d / o for d, o in zip(walls["default"], walls["off"], strict=True)]
    return {"section": "speed", "qc_512px_png_s": round(small, 3),
            "segment_slide_px": size, "segment_model": str(model_path or "null"),
            "segment_wall_s": {k: [round(v, 2) for v in vs] for k, vs in walls.items()},
            "segment_wall_ratio_qc_over_off_median": round(statistics.median(ratios), 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--fixtures", type=Path, default=None, help="a histolab checkout (optional)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sections", default="ink,pure,blur,clean,lines,speed")
    parser.add_argument("--glas-every", type=int, default=1, help="use every n-th GlaS Test A image")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--size", type=int, default=20480, help="side of the synthetic slide segmented (px)")
    parser.add_argument("--model", type=Path, default=None,
                        help="a .wsiseg model for the speed section (at 1 um/px, 512 px tiles; e.g. the "
                             "demo's run/best.wsiseg) instead of the null model")
    args = parser.parse_args(argv)
    settings = QCSettings()
    shared = args.shared if (args.shared / "slides/CMU-1-Small-Region.svs").is_file() else None
    sections = args.sections.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for section in sections:
            t0 = time.perf_counter()
            if section in ("ink", "blur", "lines") and shared is None:
                print(json.dumps({"section": section, "skipped": "no ../shared/data"}))
                continue
            runs = {"ink": lambda: bench_ink(shared, settings, args.seed, args.glas_every, work),  # type: ignore[arg-type]
                    "pure": lambda: bench_pure(settings, args.seed, args.fixtures, work),
                    "blur": lambda: bench_blur(shared, settings),  # type: ignore[arg-type]
                    "lines": lambda: bench_lines(shared, settings, args.seed, args.glas_every, work),  # type: ignore[arg-type]
                    "clean": lambda: bench_clean(shared, settings, work),
                    "speed": lambda: bench_speed(settings, args.pairs, args.size, args.model, work)}
            result = runs[section]()
            result["seconds"] = round(time.perf_counter() - t0, 1)
            print(json.dumps(result), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
