"""Benchmark ``wsiseg export``: polygons/s, MB/s and peak memory on a large label map with many regions.

Writes a synthetic wsiseg OME-Zarr segmentation (default 20480 x 20480 labels, three classes plus
"not analysed", regions ~10-60 px across, so tens of thousands of regions; ``--pattern tissue`` makes
classes percolate into slide-wide regions with many holes) block by block, then runs
``export_geojson`` in a fresh child process and reports its wall time, regions/s, label MB/s (1 byte per
label pixel), output MB/s and the child's peak RSS (ru_maxrss). Memory stays bounded by the block size,
not the slide: compare ``--size 10240`` with the default.

    .venv/bin/python benchmarks/bench_export.py [--size 20480] [--block-size 2048] [--split-regions]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from scipy import ndimage

from wsiseg.classes import ClassList

CLASSES = ClassList.from_names(["stroma", "tumour", "necrosis"])
MPP = 0.5
CHUNK = 1024


def _field(coarse: np.ndarray, y: int, x: int, h: int, w: int, cell: float) -> np.ndarray:
    """Bilinear sample of the coarse random grid at level-0 pixels [y, y+h) x [x, x+w): smooth, continuous
    across blocks."""
    yy, xx = np.mgrid[y:y + h, x:x + w].astype(np.float32) / cell
    return np.asarray(ndimage.map_coordinates(coarse, [yy, xx], order=1, mode="nearest"))


#: Quantiles of the random field that separate "not analysed" and the three classes.
PATTERNS = {
    # tissue-like: 80 % analysed; classes percolate into slide-wide regions with many holes
    "tissue": [0.2, 0.5, 0.75],
    # islands: 45 % analysed, regions stay bounded (nested class rings around the field's peaks)
    "islands": [0.55, 0.7, 0.85],
}


def write_synthetic(path: Path, size: int, cell: float, pattern: str = "islands", seed: int = 0) -> int:
    """Write the segmentation; returns the number of label pixels."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((int(size / cell) + 2, int(size / cell) + 2)).astype(np.float32)
    thresholds = np.quantile(coarse, PATTERNS[pattern])
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    labels = root.require_group("labels").require_group("classes").create_array(
        "0", shape=(size, size), dtype="uint8", chunks=(CHUNK, CHUNK))
    probs = root.create_array("0", shape=(len(CLASSES), size, size), dtype="uint8",
                              chunks=(len(CLASSES), CHUNK, CHUNK))
    for y in range(0, size, CHUNK):
        for x in range(0, size, CHUNK):
            h, w = min(CHUNK, size - y), min(CHUNK, size - x)
            lab = np.digitize(_field(coarse, y, x, h, w, cell), thresholds).astype(np.uint8)
            labels[y:y + h, x:x + w] = lab
            p = np.full((len(CLASSES), h, w), 40, dtype=np.uint8)
            for c in range(len(CLASSES)):
                p[c][lab == c + 1] = 170 + 20 * c
            probs[:, y:y + h, x:x + w] = p
    space = [{"name": "y", "type": "space", "unit": "micrometer"},
             {"name": "x", "type": "space", "unit": "micrometer"}]
    scale: list[dict[str, Any]] = [{"type": "scale", "scale": [1.0, MPP, MPP]}]
    root.attrs.update({
        "multiscales": [{"version": "0.4", "axes": [{"name": "c", "type": "channel"}, *space],
                         "datasets": [{"path": "0", "coordinateTransformations": scale}]}],
        "wsiseg": {"slide": {"path": "synthetic.svs", "mpp": [MPP / 2, MPP / 2], "sha256_head": "bench"},
                   "classes": CLASSES.to_dict(), "mpp": MPP},
    })
    root["labels"].attrs.update({"labels": ["classes"]})
    root["labels/classes"].attrs.update({"multiscales": [{
        "version": "0.4", "axes": space,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [MPP, MPP]}]}]}]})
    return size * size


def _export_child(zarr_path: str, out: str, kwargs: dict[str, Any], queue: Any) -> None:
    from wsiseg.export import export_geojson

    result = export_geojson(zarr_path, out, **kwargs)
    queue.put({"n_regions": result.n_regions, "n_features": result.n_features,
               "n_vertices": result.n_vertices, "n_bytes": result.n_bytes,
               "seconds": result.seconds, "n_repaired": result.n_repaired,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20480, help="label map side in pixels")
    parser.add_argument("--cell", type=float, default=24.0, help="feature scale of the random field (px)")
    parser.add_argument("--pattern", choices=sorted(PATTERNS), default="islands")
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--split-regions", action="store_true")
    parser.add_argument("--simplify", type=float, default=0.0, help="simplification tolerance, um")
    parser.add_argument("--gz", action="store_true", help="write .geojson.gz")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        seg = Path(tmp) / "bench.zarr"
        t0 = time.perf_counter()
        n_pixels = write_synthetic(seg, args.size, args.cell, args.pattern)
        print(f"synthetic {args.size}x{args.size} segmentation written in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        out = Path(tmp) / ("bench.geojson.gz" if args.gz else "bench.geojson")
        kwargs = {"block_size": args.block_size, "split_regions": args.split_regions,
                  "simplify_um": args.simplify}
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_export_child, args=(str(seg), str(out), kwargs, queue))
        child.start()
        stats = queue.get()
        child.join()
    report = {
        "size": args.size, "pattern": args.pattern, "block_size": args.block_size,
        "split_regions": args.split_regions, "simplify_um": args.simplify, "gz": args.gz, **stats,
        "regions_per_s": stats["n_regions"] / stats["seconds"],
        "label_mb_per_s": n_pixels / 1e6 / stats["seconds"],
        "output_mb": stats["n_bytes"] / 1e6,
        "output_mb_per_s": stats["n_bytes"] / 1e6 / stats["seconds"],
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
