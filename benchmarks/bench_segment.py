"""Benchmark of ``wsiseg segment`` (prints figures; not a test).

(a) Pipeline capacity: raw OpenSlide read rate of the grid's 1024x1024 tiles (same tiles, same threads) vs
    ``segment_slide`` with a model that costs nothing (read + tissue + stitch + pyramid + write), with
    per-stage times. Two such models, alternating with the raw reads: the NullModel (constant
    probabilities, which compress far better than real ones) and the PatternModel (smooth, varied
    multi-class probabilities: the write cost of real predictions). Both answer on SAM-Path's output grid
    (1/4 of the tile), as a real model does; one more run writes the output at the tiles' own resolution
    (``output_mpp=mpp``: 16x the stitching and writing).
(b) SAM-Path end to end: wall time vs model-only time on the same tiles (pipeline efficiency), for the tiny
    preset and for a real architecture (``--real-preset``, default vit_b at 512 px input on the CPU).
(c) Peak RSS of ``segment`` (NullModel) on several slide sizes, each in a fresh subprocess.

Synthetic slides are generated once into ``--cache-dir``. Run::

    .venv/bin/python benchmarks/bench_segment.py            # all sections (about 10 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_segment.py --sections a --size 20000
    .venv/bin/python benchmarks/bench_segment.py --sections b --device cuda --precision bf16 \
        --real-preset sam_path_vit_b --real-input-size 1024 --real-tiles 256       # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "2")

from wsiseg.infer import NullModel, PatternModel, segment_slide
from wsiseg.slide import detect_tissue, make_tile_grid, open_slide
from wsiseg.synthetic import SYNTHETIC_CLASSES, write_synthetic_slide
from wsiseg.tiling import Tiling

SLIDE_MPP = 0.5


def _cpu_s() -> float:
    """CPU seconds (user + system) this process has used: unlike wall time, not inflated by other users."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def synthetic(cache: Path, size: int) -> Path:
    """``cache/synthetic_<size>.svs`` (size x size level-0 pixels at 0.5 um/px), generated on first use."""
    path = cache / f"synthetic_{size}.svs"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"generating {path} (once) ...", flush=True)
        t0 = time.perf_counter()
        tmp = cache / f"synthetic_{size}.tmp.svs"
        write_synthetic_slide(tmp, size, size, mpp=SLIDE_MPP, seed=7)
        os.replace(tmp, path)
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _steal_s() -> float:
    """Seconds of CPU time the hypervisor gave to other guests (``steal`` in /proc/stat), all CPUs."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def section_a(slide_path: Path, workers: int, batch: int, repeats: int) -> dict[str, Any]:
    """Raw reads and ``segment`` alternate ``repeats`` times; the ratio of each adjacent pair is reported
    (their median is the figure): a shared virtual machine's speed drifts by +-25% within minutes, which a
    single pair of runs cannot tell from a real difference."""
    import statistics

    mpp, tile, overlap = SLIDE_MPP, 1024, 128
    with open_slide(slide_path) as slide:
        t0 = time.perf_counter()
        grid = make_tile_grid(slide, Tiling.create(mpp, tile, overlap), tissue=detect_tissue(slide))
        t_tissue = time.perf_counter() - t0
    n = len(grid.tiles)
    mp = n * tile * tile / 1e6
    models = {"null": NullModel(SYNTHETIC_CLASSES, mpp, tile),
              "pattern": PatternModel(SYNTHETIC_CLASSES, mpp, tile)}

    def raw() -> tuple[float, float]:
        with open_slide(slide_path) as slide:  # a fresh handle (and tile cache), as segment opens one
            t0, c0 = time.perf_counter(), _cpu_s()
            with ThreadPoolExecutor(workers) as pool:
                for _ in pool.map(lambda t: slide.read_region(t.x0, t.y0, tile, tile, mpp), grid.tiles):
                    pass
            return time.perf_counter() - t0, _cpu_s() - c0

    def segment(name: str, **changes: Any) -> tuple[float, float, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            c0 = _cpu_s()
            res = segment_slide(slide_path, models[name], Path(tmp) / "o.zarr", overlap=overlap,
                                batch_size=batch, read_workers=workers, progress=False, preview=False,
                                **changes)
            size = sum(f.stat().st_size for f in Path(tmp, "o.zarr").rglob("*") if f.is_file())
            return res.timings["wall"], _cpu_s() - c0, (res, size)

    pairs, pattern_pairs = [], []
    segment("null")  # untimed warm-up: the first call pays the lazy imports (scipy, zarr codecs, export)
    steal0, wall0 = _steal_s(), time.perf_counter()
    for _ in range(repeats):
        raw_s, raw_cpu = raw()
        seg_s, seg_cpu, (res, null_bytes) = segment("null")
        pat_s, pat_cpu, (_, pattern_bytes) = segment("pattern")
        pairs.append({"raw_tiles_per_s": n / raw_s, "segment_tiles_per_s": n / seg_s,
                      "ratio": raw_s / seg_s, "raw_cpu_ms_per_tile": 1000 * raw_cpu / n,
                      "segment_cpu_ms_per_tile": 1000 * seg_cpu / n,
                      "cpu_ratio": raw_cpu / seg_cpu, "stages_s": res.timings})
        pattern_pairs.append({"tiles_per_s": n / pat_s, "ratio": raw_s / pat_s,
                              "cpu_ms_per_tile": 1000 * pat_cpu / n})
    steal = (_steal_s() - steal0) / (time.perf_counter() - wall0) / (os.cpu_count() or 1)
    raw_s, _ = raw()
    full_s, full_cpu, (full, _) = segment("null", output_mpp=mpp)

    def med(key: str, rows: list[dict[str, Any]] = pairs) -> float:
        return float(statistics.median(p[key] for p in rows))

    out = {"tiles": n, "grid_tiles": grid.n_total, "pairs": pairs, "ratio": med("ratio"),
           "pattern": {"pairs": pattern_pairs, "ratio": med("ratio", pattern_pairs),
                       "tiles_per_s": med("tiles_per_s", pattern_pairs),
                       "cpu_ms_per_tile": med("cpu_ms_per_tile", pattern_pairs),
                       "output_bytes": pattern_bytes, "null_output_bytes": null_bytes},
           "raw_tiles_per_s": med("raw_tiles_per_s"), "segment_tiles_per_s": med("segment_tiles_per_s"),
           "raw_mp_per_s": med("raw_tiles_per_s") * mp / n,
           "segment_mp_per_s": med("segment_tiles_per_s") * mp / n,
           "cpu_ratio": med("cpu_ratio"), "raw_cpu_ms_per_tile": med("raw_cpu_ms_per_tile"),
           "segment_cpu_ms_per_tile": med("segment_cpu_ms_per_tile"), "steal_share": steal,
           "load_average": os.getloadavg()[0], "tissue_detection_s": t_tissue, "output_mpp": res.output_mpp,
           "full_resolution": {"tiles_per_s": n / full_s, "ratio": raw_s / full_s,
                               "cpu_ms_per_tile": 1000 * full_cpu / n, "stages_s": full.timings}}
    print(f"(a) pipeline capacity, {n}/{grid.n_total} tissue tiles of {tile}x{tile} at {mpp} um/px, "
          f"{workers} read threads, {repeats} alternating pairs of runs (median)")
    print(f"    raw OpenSlide reads : {out['raw_tiles_per_s']:6.1f} tiles/s  {out['raw_mp_per_s']:6.1f} MP/s")
    print(f"    segment, NullModel  : {out['segment_tiles_per_s']:6.1f} tiles/s  "
          f"{out['segment_mp_per_s']:6.1f} MP/s  -> ratio {out['ratio']:.2f} (target >= 0.8; pairs: "
          + ", ".join(f"{p['ratio']:.2f}" for p in pairs) + f"); output at {res.output_mpp:g} um/px "
          "(SAM-Path's grid)")
    pat = out["pattern"]
    print(f"    segment, PatternModel: {pat['tiles_per_s']:6.1f} tiles/s  -> ratio {pat['ratio']:.2f} "
          "(pairs: "
          + ", ".join(f"{p['ratio']:.2f}" for p in pattern_pairs) + f"; {pat['cpu_ms_per_tile']:.0f} ms CPU "
          f"per tile; output {pattern_bytes / 1e6:.1f} MB vs {null_bytes / 1e6:.1f} MB for constant "
          "probabilities)")
    fr = out["full_resolution"]
    print(f"    ... output at {mpp:g} um/px: {fr['tiles_per_s']:6.1f} tiles/s  -> ratio {fr['ratio']:.2f} "
          f"({fr['cpu_ms_per_tile']:.0f} ms CPU per tile)")
    print(f"    CPU per tile        : raw {out['raw_cpu_ms_per_tile']:.0f} ms, segment "
          f"{out['segment_cpu_ms_per_tile']:.0f} ms -> CPU ratio {out['cpu_ratio']:.2f} (load average "
          f"{out['load_average']:.1f} on {os.cpu_count()} CPUs, {100 * steal:.0f}% of CPU time stolen by "
          "the hypervisor)")
    print("    stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in pairs[-1]["stages_s"].items()
                                        if isinstance(v, float)))
    return out


def _efficiency(label: str, slide_path: Path, predictor: Any, mpp: float, tile: int, overlap: int,
                workers: int, batch: int, max_tiles: int | None, repeats: int) -> dict[str, Any]:
    """Model alone on pre-read tiles (one thread) vs ``segment_slide`` on the same tiles (best of
    ``repeats`` each; segment calls the model from ``predictor.lanes`` threads)."""
    import numpy as np

    with open_slide(slide_path) as slide:
        grid = make_tile_grid(slide, Tiling.create(mpp, tile, overlap), tissue=detect_tissue(slide))
    tiles_meta = grid.tiles if max_tiles is None else grid.tiles[:max_tiles]
    mask = None
    if max_tiles is not None and len(grid.tiles) > max_tiles:
        # analyse exactly these tiles: a ROI of their union, in level-0 pixels (a TissueMask at 8 um/px)
        from wsiseg.slide import TissueMask

        with open_slide(slide_path) as slide:
            w0, h0 = slide.dimensions
            f = 8.0 / slide.mpp[0]
            roi = np.zeros((int(np.ceil(h0 / f)), int(np.ceil(w0 / f))), bool)
            size0 = tile * mpp / slide.mpp[0]
            inset = overlap * mpp / slide.mpp[0] + f  # stay clear of the neighbours
            for t in tiles_meta:
                roi[int((t.y0 + inset) // f):int((t.y0 + size0 - inset) // f),
                    int((t.x0 + inset) // f):int((t.x0 + size0 - inset) // f)] = True
            mask = TissueMask(roi, 8.0, slide.mpp)
    with open_slide(slide_path) as slide:
        tiles = np.empty((len(tiles_meta), tile, tile, 3), np.uint8)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda it: slide.read_region(it[1].x0, it[1].y0, tile, tile, mpp, out=tiles[it[0]]),
                          enumerate(tiles_meta)))
    out_size = tile // predictor.output_stride
    predictor.predict(tiles[:batch], out_size)  # warm-up (allocator, threads, kernels)
    model_times, walls, res = [], [], None
    for _ in range(repeats):  # alternate, keep the best of each: the machine is shared
        t0 = time.perf_counter()
        for i in range(0, len(tiles), batch):
            predictor.predict(tiles[i:i + batch], out_size)
        model_times.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            res = segment_slide(slide_path, predictor, Path(tmp) / "m.zarr", mpp=mpp, tile_size=tile,
                                overlap=overlap, batch_size=batch, read_workers=workers, progress=False,
                                preview=False, mask=mask)
        walls.append(res.timings["wall"])
    assert res is not None
    model_s, wall = min(model_times), min(walls)
    out = {"label": label, "tiles": len(tiles), "segment_tiles": res.n_tiles, "wall_s": wall,
           "model_only_s": model_s, "efficiency": model_s * res.n_tiles / len(tiles) / wall,
           "model_busy_share": res.timings["model_busy"] / res.timings["wall"],
           "model_starved_s": res.timings["wait_input"], "stages_s": res.timings}
    t = res.timings
    print(f"    {label}: {res.n_tiles} tiles of {tile}x{tile} at {mpp} um/px on {predictor.device}")
    print(f"      wall {wall:.1f} s, model alone {model_s:.1f} s -> efficiency {out['efficiency']:.2f} "
          f"(target >= 0.95); model busy {100 * out['model_busy_share']:.1f}% of the run")
    idle = t["wall"] - t["model_busy"]
    after = t["pipeline"] - t["first_batch"] - t["model_busy"] - t["idle_between"]
    print(f"      where the model's idle {idle:.2f} s went: {t['wall'] - t['pipeline']:.2f} s planning and "
          f"finishing the slide, {t['first_batch']:.2f} s to the first batch, {t['idle_between']:.2f} s in "
          f"{t['idle_gaps']:.0f} gaps between batches (longest {t['longest_idle_gap'] * 1e3:.0f} ms), "
          f"{after:.2f} s draining the last; model threads waited {t['wait_input']:.2f} s for tiles and "
          f"{t['wait_output']:.2f} s for the writer")
    return out


def section_b(slide_path: Path, large: Path, cache: Path, workers: int, batch: int, device: str,
              precision: str, real_preset: str, real_input: int, real_tiles: int,
              real_mpp: float = 1.0, real_repeats: int = 2, real_compile: bool = False,
              lanes: int = 1) -> dict[str, Any]:
    """Tiny preset over the whole ``large`` slide (fixed per-slide costs amortised); the real preset on
    ``real_tiles`` tiles of ``slide_path``, in segment with ``lanes`` model threads on the one device
    (each on its own CUDA stream with pinned buffers: while one lane's tiles are copied in or its
    probabilities back, the other lane's forward pass runs; the predictor's default on CUDA is 2)."""
    import torch

    from wsiseg.model import SamPathPredictor, load_model
    from wsiseg.model.checkpoint import save_checkpoint
    from wsiseg.model.sam_path import ModelConfig, SamPath

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    print("(b) pipeline efficiency: model-only time / wall time of segment on the same tiles")
    out: dict[str, Any] = {}
    mpp, tile, overlap = 4.0, 256, 32
    ckpt = cache / "tiny_256.wsiseg"
    if not ckpt.exists():
        torch.manual_seed(0)
        model = SamPath(ModelConfig.from_preset("tiny", len(SYNTHETIC_CLASSES), input_size=256))
        save_checkpoint(model, ckpt, classes=SYNTHETIC_CLASSES, mpp=mpp, tile_size=tile, self_contained=True)
    tiny = load_model(ckpt, device=device, precision=precision)
    out["tiny"] = _efficiency("tiny preset", large, tiny, mpp, tile, overlap, workers, batch, None, 2)
    if real_preset:
        torch.manual_seed(0)  # random weights: speed does not depend on them
        real = SamPath(ModelConfig.from_preset(real_preset, len(SYNTHETIC_CLASSES), input_size=real_input))
        pred = SamPathPredictor(real, SYNTHETIC_CLASSES, mpp=real_mpp, tile_size=real_input, device=device,
                                precision=precision, compile=real_compile)
        pred.lanes = lanes  # model threads on the device, each on its own stream (CUDA)
        out["real"] = _efficiency(f"{real_preset} at {real_input} px, {lanes} lane(s)", slide_path, pred,
                                  real_mpp, real_input, real_input // 8, workers, batch, real_tiles,
                                  real_repeats)
    return out


_CHILD = """
import resource, sys, tempfile, json
from pathlib import Path
from wsiseg.infer import NullModel, segment_slide
from wsiseg.synthetic import SYNTHETIC_CLASSES
with tempfile.TemporaryDirectory() as tmp:
    r = segment_slide(sys.argv[1], NullModel(SYNTHETIC_CLASSES, 0.5, 1024), Path(tmp) / "o.zarr",
                      overlap=128, batch_size=int(sys.argv[2]), read_workers=int(sys.argv[3]),
                      progress=False, preview=False)
# VmHWM: this process's own peak (ru_maxrss would report the parent's if it was larger at exec time)
hwm = [int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")]
peak = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_rss_mb": peak, "tiles": r.n_tiles, "wall_s": r.timings["wall"]}))
"""


def section_c(slides: list[Path], workers: int, batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    print(f"(c) peak RSS of segment (NullModel, 1024 px tiles, batch {batch}), fresh process per slide")
    for path in slides:
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(batch), str(workers)],
                              capture_output=True, text=True, check=True)
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        out[path.name] = rec
        print(f"    {path.name}: {rec['tiles']} tiles, peak RSS {rec['peak_rss_mb']:.0f} MB "
              f"({rec['wall_s']:.0f} s)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "wsiseg-bench")
    ap.add_argument("--size", type=int, default=20000, help="side of the large synthetic slide (level-0 px)")
    ap.add_argument("--small-size", type=int, default=10000, help="side of the small slide for (b) and (c)")
    ap.add_argument("--rss-sizes", default="10000,20000,40000",
                    help="slide sides for (c), comma-separated (slides are generated once)")
    ap.add_argument("--device", default="cpu", help="device of (b): cpu, cuda, mps or auto")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--real-preset", default="sam_path_vit_b", help="real architecture for (b); '' to skip")
    ap.add_argument("--real-input-size", type=int, default=512, help="its input size (1024 on a GPU)")
    ap.add_argument("--real-tiles", type=int, default=16, help="tiles it segments (256 on a GPU)")
    ap.add_argument("--real-mpp", type=float, default=1.0, help="its tiles' resolution, um/px")
    ap.add_argument("--real-repeats", type=int, default=2, help="runs of each (model alone, segment)")
    ap.add_argument("--real-compile", action="store_true", help="torch.compile the real model")
    ap.add_argument("--lanes", type=int, default=1, help="model threads on the device in segment (b)")
    ap.add_argument("--read-workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--sections", default="abc")
    ap.add_argument("--repeats", type=int, default=3, help="alternating raw/segment pairs in (a)")
    args = ap.parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    large = synthetic(args.cache_dir, args.size)
    small = synthetic(args.cache_dir, args.small_size) if set(args.sections) & {"b", "c"} else None
    if "a" in args.sections:
        results["a"] = section_a(large, args.read_workers, args.batch_size, args.repeats)
    if "b" in args.sections and small is not None:
        results["b"] = section_b(small, large, args.cache_dir, args.read_workers, args.batch_size,
                                 args.device, args.precision, args.real_preset, args.real_input_size,
                                 args.real_tiles, args.real_mpp, args.real_repeats, args.real_compile,
                                 args.lanes)
    if "c" in args.sections:
        sizes = [int(v) for v in args.rss_sizes.split(",") if v]
        results["c"] = section_c([synthetic(args.cache_dir, n) for n in sizes], args.read_workers,
                                 args.batch_size)
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
