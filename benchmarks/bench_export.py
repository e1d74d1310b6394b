"""Benchmark ``wsiseg export``: polygons/s, MB/s and peak memory on a large label map with many regions.

Writes a synthetic wsiseg OME-Zarr segmentation (default 20480 x 20480 labels, three classes plus
"not analysed", regions ~10-60 px across, so tens of thousands of regions; ``--pattern tissue`` makes
classes percolate into slide-wide regions with many holes) chunk by chunk (the benchmark itself stays
small at any size), then runs ``export_geojson`` in a fresh child process and reports its wall time,
regions/s, label MB/s (1 byte per label pixel), output MB/s, the files written (an export larger than
``--max-file-mb`` continues in further files) and the child's peak RSS (ru_maxrss).
The synthetic slide is 3 level-0 pixels smaller than the label grid covers, so the export clips.
Memory stays bounded by the block and split-tile sizes, not the slide: give several sizes, e.g.
``--size 20480 40960 --pattern tissue`` (each its own map and child process, one after the other).

    .venv/bin/python benchmarks/bench_export.py [--size 20480 ...] [--pattern islands|tissue]
        [--block-size 2048] [--split-size 8192] [--split-regions] [--simplify UM] [--gz]
        [--max-parts 10000] [--max-file-mb 100]
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
from wsiseg.export import DEFAULT_BLOCK_SIZE, DEFAULT_MAX_BYTES, DEFAULT_MAX_PARTS, DEFAULT_SPLIT_SIZE

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
        "wsiseg": {"slide": {"path": "synthetic.svs", "mpp": [MPP / 2, MPP / 2], "sha256_head": "bench",
                             "width0": 2 * size - 3, "height0": 2 * size - 3},
                   "classes": CLASSES.to_dict(), "mpp": MPP, "run_id": f"bench{seed:04x}"},
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
               "seconds": result.seconds, "n_repaired": result.n_repaired, "n_clipped": result.n_clipped,
               "n_split": result.n_split, "n_files": len(result.paths),
               "largest_file_mb": max(p.stat().st_size for p in result.paths) / 1e6,
               "table_mb": result.table.stat().st_size / 1e6 if result.table else None,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def run_one(args: argparse.Namespace, size: int) -> dict[str, Any]:
    """Write the map of one size, export it in a child process, return the report."""
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        seg = Path(tmp) / "bench.zarr"
        t0 = time.perf_counter()
        n_pixels = write_synthetic(seg, size, args.cell, args.pattern)
        print(f"synthetic {size}x{size} segmentation written in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        out = Path(tmp) / ("bench.geojson.gz" if args.gz else "bench.geojson")
        kwargs = {"block_size": args.block_size, "split_regions": args.split_regions,
                  "simplify_um": args.simplify, "split_size": args.split_size,
                  "max_parts": args.max_parts, "max_bytes": round(args.max_file_mb * 1e6)}
        if args.objects:  # every region of the named classes (all: every class) as an object
            kwargs.update(objects=True, classes=None if args.objects == "all" else args.objects.split(","))
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        child = ctx.Process(target=_export_child, args=(str(seg), str(out), kwargs, queue))
        child.start()
        stats: dict[str, Any] | None = None
        while stats is None:
            try:
                stats = queue.get(timeout=1.0)
            except Exception:  # queue.Empty: still running, or dead without a result
                if not child.is_alive():
                    raise SystemExit(f"export child failed (exit code {child.exitcode})") from None
        child.join()
    return {
        "size": size, "pattern": args.pattern, "block_size": args.block_size, "split_size": args.split_size,
        "split_regions": args.split_regions, "simplify_um": args.simplify, "gz": args.gz,
        "objects": args.objects, **stats,
        "regions_per_s": stats["n_regions"] / stats["seconds"],
        "label_mb_per_s": n_pixels / 1e6 / stats["seconds"],
        "output_mb": stats["n_bytes"] / 1e6,
        "output_mb_per_s": stats["n_bytes"] / 1e6 / stats["seconds"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs="+", default=[20480],
                        help="label map side(s) in pixels; several sizes run one after the other")
    parser.add_argument("--cell", type=float, default=24.0, help="feature scale of the random field (px)")
    parser.add_argument("--pattern", choices=sorted(PATTERNS), default="islands")
    parser.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE)
    parser.add_argument("--split-size", type=int, default=DEFAULT_SPLIT_SIZE,
                        help="split tile side in pixels (0 = none: slide-wide regions held whole)")
    parser.add_argument("--split-regions", action="store_true")
    parser.add_argument("--simplify", type=float, default=0.0, help="simplification tolerance, um")
    parser.add_argument("--gz", action="store_true", help="write .geojson.gz")
    parser.add_argument("--max-parts", type=int, default=DEFAULT_MAX_PARTS,
                        help="polygons per feature at most")
    parser.add_argument("--max-file-mb", type=float, default=DEFAULT_MAX_BYTES / 1e6,
                        help="uncompressed MB per file at most (0 = no limit)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--objects", default="", metavar="CLASS[,CLASS]|all",
                        help="export these classes' regions as objects with measurements and a table")
    args = parser.parse_args(argv)
    for size in args.size:
        print(json.dumps(run_one(args, size), indent=1), flush=True)


if __name__ == "__main__":
    main()
