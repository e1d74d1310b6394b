"""Walkthrough of the Python API on a synthetic slide: read, tile, segment, export, score.

Runs in well under a minute on a CPU with no downloads. The model is the colour "oracle"
(:class:`wsiseg.infer.ColourModel`), which classifies by the synthetic classes' mean colours; swap in
``wsiseg.load_model("model.wsiseg")`` for a trained SAM-Path.

    python examples/segment_synthetic_slide.py /tmp/wsiseg-example
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from wsiseg import export_geojson, open_slide, segment_slide
from wsiseg.infer import ColourModel, open_segmentation
from wsiseg.slide import detect_tissue, make_tile_grid
from wsiseg.synthetic import write_synthetic_slide
from wsiseg.tiling import Tiling


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = write_synthetic_slide(out_dir / "synthetic.svs", 4096, 4096, mpp=0.5, seed=7)

    with open_slide(truth.path) as slide:
        print(f"slide {slide.dimensions} px at {slide.mpp[0]} um/px, {slide.level_count} levels")
        tissue = detect_tissue(slide)
        grid = make_tile_grid(slide, Tiling.create(1.0, 512, 64), tissue=tissue)
        print(f"{len(grid.tiles)} of {grid.n_total} tiles (512 px at 1 um/px) touch tissue")

    model = ColourModel(truth.classes, truth.palette, mpp=1.0, tile_size=512)
    result = segment_slide(truth.path, model, out_dir / "synthetic.zarr", overwrite=True)
    print(result.summary())

    export = export_geojson(out_dir / "synthetic.zarr", out_dir / "synthetic.geojson")
    print(export)

    seg = open_segmentation(out_dir / "synthetic.zarr")
    predicted = np.asarray(seg.labels[0][:, :]).astype(np.int64) - 1  # -1 = not analysed
    expected = truth.labels(seg.mpp[0])[: predicted.shape[0], : predicted.shape[1]]
    analysed = predicted >= 0
    accuracy = float((predicted[analysed] == expected[analysed]).mean())
    print(f"pixel accuracy against the exact ground truth: {accuracy:.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("example-output"))
