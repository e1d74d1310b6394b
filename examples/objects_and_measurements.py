"""Objects with measurements: every inflammatory region of a synthetic slide as one QuPath object, its table,
and a picture of them coloured by circularity.

Runs in under a minute on a CPU with no downloads (the colour "oracle" model stands in for SAM-Path).

    python examples/objects_and_measurements.py /tmp/wsiseg-objects [figure.png]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from skimage.measure import label as components

from wsiseg import export_geojson, segment_slide
from wsiseg.infer import ColourModel, open_segmentation
from wsiseg.synthetic import write_synthetic_slide

CLASS = "inflammatory"


def main(out_dir: Path, figure: Path | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = write_synthetic_slide(out_dir / "synthetic.svs", 3072, 3072, mpp=0.5, seed=11)
    model = ColourModel(truth.classes, truth.palette, mpp=1.0, tile_size=512)
    segment_slide(truth.path, model, out_dir / "synthetic.zarr", overwrite=True, progress=False)

    result = export_geojson(out_dir / "synthetic.zarr", out_dir / f"{CLASS}.geojson", classes=[CLASS],
                            objects=True, min_area_um2=50.0)
    assert result.table is not None
    with open(result.table, newline="") as f:
        rows = list(csv.DictReader(f))
    areas = np.array([float(r["Area um^2"]) for r in rows])
    circularity = np.array([float(r["Circularity"]) for r in rows])
    print(f"{len(rows)} {CLASS} objects >= 50 um^2 in {result.path.name} and {result.table.name}: "
          f"median area {np.median(areas):.0f} um^2, median circularity {np.median(circularity):.2f}")

    seg = open_segmentation(out_dir / "synthetic.zarr")
    mpp = seg.mpp[0]
    expected = truth.labels(mpp) == truth.classes.index(CLASS)
    regions = components(expected, connectivity=1)
    sizes = np.bincount(regions.ravel())[1:] * mpp * mpp
    print(f"ground truth: {int((sizes >= 50.0).sum())} {CLASS} regions >= 50 um^2")
    if figure is not None:
        draw(out_dir / "synthetic.svs", result.path, figure)


def draw(slide_path: Path, geojson: Path, figure: Path) -> None:
    """The slide's thumbnail with every object's outline, coloured by its circularity."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    from wsiseg import open_slide

    with open_slide(slide_path) as slide:
        thumb = np.asarray(slide.thumbnail(slide.dimensions[0] * slide.mpp[0] / 1024))
        scale = thumb.shape[1] / slide.dimensions[0]
    features = json.loads(geojson.read_text())["features"]
    lines, values = [], []
    for feature in features:
        geometry = feature["geometry"]
        polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        for polygon in polygons:
            lines.append(np.asarray(polygon[0]) * scale)
            values.append(feature["properties"]["measurements"]["Circularity"])
    fig, ax = plt.subplots(figsize=(6.4, 6.4), dpi=120)
    ax.imshow(thumb)
    collection = LineCollection(lines, array=np.asarray(values), cmap="viridis", linewidths=1.2)
    collection.set_clim(0, 1)
    ax.add_collection(collection)
    fig.colorbar(collection, ax=ax, fraction=0.046, pad=0.02, label="Circularity")
    ax.set_title(f"{len(features)} {CLASS} objects (wsiseg export --objects {CLASS})")
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(figure)
    print(f"figure: {figure}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("example-output"),
         Path(sys.argv[2]) if len(sys.argv) > 2 else None)
