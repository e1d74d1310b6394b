"""Slide read throughput: wsiseg ``Slide.read_region`` vs raw OpenSlide, at several mpp, 1 vs 2 threads.

Prints megapixels per second (target pixels) for 1024x1024 reads at distinct positions, each variant on a
fresh handle (so OpenSlide's tile cache does not favour later runs), and the ratio to raw OpenSlide.
Also wsiseg through OpenSlide's public ``read_region`` (what it does without the raw fast path of
``wsiseg.slide._openslide_raw``), and the three threading designs for concurrent reads: one shared
handle without a lock (what wsiseg does), one shared handle behind a lock, and one handle per thread.

    python benchmarks/bench_slide.py [SLIDE] [--size 8192] [--reads 48]

Without SLIDE a synthetic 8192x8192 SVS at 0.5 um/px is written to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openslide

from wsiseg.slide import open_slide
from wsiseg.synthetic import SlideLayout, write_synthetic_slide

SIDE = 1024


def _positions(w0: int, h0: int, span0: float, n: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, max(1, int(w0 - span0)), n)
    ys = rng.integers(0, max(1, int(h0 - span0)), n)
    return [(int(x), int(y)) for x, y in zip(xs, ys, strict=True)]


def _rate(fn: Callable[[tuple[int, int]], object], positions: list[tuple[int, int]], threads: int) -> float:
    """Target megapixels per second."""
    start = time.perf_counter()
    if threads == 1:
        for p in positions:
            fn(p)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, positions))
    return len(positions) * SIDE * SIDE / 1e6 / (time.perf_counter() - start)


def _best_of(makers: dict[str, Callable[[], Callable[[tuple[int, int]], object]]],
             positions: list[tuple[int, int]], threads: int, reps: int) -> dict[str, float]:
    """Best rate of each variant over ``reps`` interleaved runs, each on freshly opened handles."""
    best: dict[str, float] = dict.fromkeys(makers, 0.0)
    for _ in range(reps):
        for name, make in makers.items():
            best[name] = max(best[name], _rate(make(), positions, threads))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("slide", nargs="?", type=Path)
    parser.add_argument("--size", type=int, default=8192, help="side of the synthetic slide (level-0 px)")
    parser.add_argument("--reads", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions; the best is shown")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    path = args.slide
    if path is None:
        path = Path(tmp.name) / "bench.svs"
        t = time.perf_counter()
        write_synthetic_slide(path, args.size, args.size, mpp=0.5, layout=SlideLayout.SVS, seed=0)
        print(f"wrote synthetic {args.size}x{args.size} SVS in {time.perf_counter() - t:.1f} s")
    with open_slide(path) as probe:
        w0, h0 = probe.dimensions
        mpp0 = probe.mpp[0]
        print(f"{path.name}: {w0}x{h0}, {probe.level_count} levels {probe.level_downsamples}, "
              f"{mpp0:.4g} um/px")
    positions0 = _positions(w0, h0, SIDE, args.reads)

    def raw_rgba() -> Callable[[tuple[int, int]], object]:
        handle = openslide.OpenSlide(str(path))
        return lambda p: handle.read_region(p, 0, (SIDE, SIDE))

    def raw_rgb() -> Callable[[tuple[int, int]], object]:
        handle = openslide.OpenSlide(str(path))
        return lambda p: np.asarray(handle.read_region(p, 0, (SIDE, SIDE)).convert("RGB"))

    def ours(mpp: float) -> Callable[[], Callable[[tuple[int, int]], object]]:
        def make() -> Callable[[tuple[int, int]], object]:
            slide = open_slide(path)
            return lambda p: slide.read_region(p[0], p[1], SIDE, SIDE, mpp)
        return make

    def ours_public() -> Callable[[tuple[int, int]], object]:
        """wsiseg through OpenSlide's public read_region (the fast path of _openslide_raw switched off)."""
        slide = open_slide(path)
        slide._backend._raw = False  # type: ignore[attr-defined]
        return lambda p: slide.read_region(p[0], p[1], SIDE, SIDE, mpp0)

    print(f"\n{SIDE}x{SIDE} reads at {args.reads} distinct positions, Mpx/s of output, best of {args.reps}")
    for threads in (1, 2):
        variants = {"raw": raw_rgba, "raw_rgb": raw_rgb, "ours": ours(mpp0), "public": ours_public}
        r = _best_of(variants, positions0, threads, args.reps)
        print(f"  threads={threads}: raw OpenSlide (PIL RGBA) {r['raw']:6.1f} | raw + RGB numpy "
              f"{r['raw_rgb']:6.1f} | wsiseg native {r['ours']:6.1f} = {r['ours'] / r['raw']:.2f}x raw | "
              f"wsiseg through the public read_region {r['public']:6.1f} (fast path = "
              f"{r['ours'] / r['public']:.2f}x)")
        for factor in (2.0, 3.0, 4.0):
            mpp = mpp0 * factor
            pos = _positions(w0, h0, SIDE * factor, args.reads, seed=int(factor))
            rate = _best_of({"x": ours(mpp)}, pos, threads, 1)["x"]
            with open_slide(path) as s:
                level = s.best_level(mpp)
            print(f"      wsiseg at {mpp:.3g} um/px (from level {level}): {rate:6.1f}")

    print(f"\nthreading designs, {SIDE}x{SIDE} native reads, 2 threads, Mpx/s, best of {args.reps}")

    def locked() -> Callable[[tuple[int, int]], object]:
        slide, lock = open_slide(path), threading.Lock()

        def read(p: tuple[int, int]) -> object:
            with lock:
                return slide.read_region(p[0], p[1], SIDE, SIDE, mpp0)
        return read

    def per_thread() -> Callable[[tuple[int, int]], object]:
        local = threading.local()

        def read(p: tuple[int, int]) -> object:
            if not hasattr(local, "slide"):
                local.slide = open_slide(path)
            return local.slide.read_region(p[0], p[1], SIDE, SIDE, mpp0)
        return read

    r = _best_of({"shared": ours(mpp0), "locked": locked, "per_thread": per_thread}, positions0, 2, args.reps)
    print(f"  one shared handle, no lock (wsiseg): {r['shared']:6.1f}\n"
          f"  one shared handle + lock           : {r['locked']:6.1f}\n"
          f"  one handle per thread              : {r['per_thread']:6.1f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
