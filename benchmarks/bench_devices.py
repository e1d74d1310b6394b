"""Throughput of ``segment --devices`` with N model replicas against one, on the same slides in one run.

    python benchmarks/bench_devices.py [--devices cpu,cpu] [--slides 6] [--size 2048] [--one-slide 6144]

Both runs take the path of ``segment --devices`` (a DeviceCluster and run_cluster), with ``--threads`` torch
threads per replica: first one replica on the first device, then one per device, so they differ only in
the number of replicas. Synthetic slides, a random-weight tiny SAM-Path at 2 um/px, 128 px tiles.
Prints tiles/s of each and the scaling ratio (target >= 0.9 N); on a GPU machine pass cuda devices and a
real checkpoint with ``--checkpoint``. ``--one-slide SIZE`` also times one slide of that side, which
``--devices`` spreads over replicas in one process (``ModelReplicas``), against one replica.

``--accelerator-s S`` measures the scheduling alone: one slide (``--one-slide`` side, default 6144) over
1, 2, ... ``--max-replicas`` accelerator stand-ins, each taking S seconds per batch of ``--batch-size``
tiles while leaving the host free (as a GPU does; ``bench_cohort.TimedModel``), and prints tiles/s, the
scaling against one replica (target >= 0.9 N) and the union share of time any replica was busy. On 2 cores
real CPU replicas also compete with the reads for the cores; these do not, so what limits them is the
pipeline (reads, hand-off, stitching), not the arithmetic.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsiseg.infer.cohort import ModelSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default="cpu,cpu")
    ap.add_argument("--slides", type=int, default=6)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per replica (both runs)")
    ap.add_argument("--one-slide", type=int, default=0, help="also one slide of this side (level-0 px)")
    ap.add_argument("--accelerator-s", type=float, default=0.0,
                    help="only the scheduling: accelerator stand-ins taking this many seconds per batch")
    ap.add_argument("--max-replicas", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()
    if args.accelerator_s > 0:
        _scheduling(args.one_slide or 6144, args.accelerator_s, args.max_replicas, args.batch_size)
        return
    import torch

    from wsiseg.infer.cohort import ModelSpec
    from wsiseg.infer.cohort.cluster import run_cluster
    from wsiseg.infer.cohort.devices import DeviceCluster, parse_devices
    from wsiseg.infer.cohort.plan import plan_jobs
    from wsiseg.infer.options import SegmentOptions
    from wsiseg.model.checkpoint import save_checkpoint
    from wsiseg.model.sam_path import ModelConfig, SamPath
    from wsiseg.synthetic import SYNTHETIC_CLASSES, write_synthetic_slide

    devices = parse_devices(args.devices)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        slides = [write_synthetic_slide(root / f"s{i}.svs", args.size, args.size, mpp=0.5, seed=i).path
                  for i in range(args.slides)]
        checkpoint = args.checkpoint
        if checkpoint is None:
            torch.manual_seed(0)
            model = SamPath(ModelConfig.from_preset("tiny", len(SYNTHETIC_CLASSES), input_size=128))
            checkpoint = save_checkpoint(model, root / "tiny.wsiseg", classes=SYNTHETIC_CLASSES, mpp=2.0,
                                         tile_size=128, self_contained=True)
        rates = {}
        spec = ModelSpec(checkpoint, devices[0])
        for run_devices in (devices[:1], devices):
            jobs, _ = plan_jobs(slides, root / f"out{len(run_devices)}", False, None, absolute=True)
            t0 = time.perf_counter()
            with DeviceCluster(run_devices, threads=args.threads) as client:
                outcomes = list(run_cluster(client, jobs, spec, SegmentOptions(overwrite=True)))
            seconds = time.perf_counter() - t0
            tiles = sum(o.result.n_tiles for o in outcomes if o.result is not None)
            rates[len(run_devices)] = tiles / seconds
            print(f"{len(run_devices)} replica(s) on {','.join(run_devices)}: {tiles} tiles of {len(slides)} "
                  f"slides in {seconds:.1f} s = {tiles / seconds:.1f} tiles/s", flush=True)
        one, many = rates[1], rates[len(devices)]
        target = 0.9 * len(devices)
        print(f"scaling: {many / one:.2f}x with {len(devices)} replicas (target >= {target:.1f}x)")
        if args.one_slide:
            _one_slide(root, args.one_slide, ModelSpec(checkpoint, devices[0]), devices, args.threads)


def _one_slide(root: Path, size: int, spec: ModelSpec, devices: tuple[str, ...], threads: int) -> None:
    """One slide: one replica against one per device sharing its batches (segment_slides' in-process path)."""
    import torch

    from wsiseg.infer.cohort import segment_slides
    from wsiseg.synthetic import write_synthetic_slide

    torch.set_num_threads(threads)
    slide = write_synthetic_slide(root / "one.svs", size, size, mpp=0.5, seed=99).path
    rates = {}
    for run_devices in (devices[:1], devices):
        t0 = time.perf_counter()
        result = segment_slides([slide], spec, root / f"one{len(run_devices)}.zarr", single=True,
                                devices=run_devices, progress=False, overwrite=True)
        seconds = time.perf_counter() - t0
        rates[len(run_devices)] = result.n_tiles / seconds
        print(f"one slide, {len(run_devices)} replica(s): {result.n_tiles} tiles in {seconds:.1f} s = "
              f"{rates[len(run_devices)]:.1f} tiles/s", flush=True)
    print(f"one slide scaling: {rates[len(devices)] / rates[1]:.2f}x with {len(devices)} replicas")


def _scheduling(size: int, batch_s: float, max_replicas: int, batch_size: int) -> None:
    """One slide over 1..max_replicas accelerator stand-ins (see the module docstring)."""
    from bench_cohort import TimedModel

    from wsiseg.infer import PatternModel, segment_slide
    from wsiseg.infer.replicas import ModelReplicas
    from wsiseg.synthetic import SYNTHETIC_CLASSES, write_synthetic_slide

    counts = [n for n in (1, 2, 4, 8, 16) if n <= max_replicas]
    with tempfile.TemporaryDirectory() as tmp:
        slide = write_synthetic_slide(Path(tmp) / "one.svs", size, size, mpp=0.5, seed=99).path
        rates: dict[int, float] = {}
        for n in counts:
            replicas = [TimedModel(PatternModel(SYNTHETIC_CLASSES, mpp=1.0, tile_size=512), batch_s)
                        for _ in range(n)]
            t0 = time.perf_counter()
            result = segment_slide(slide, ModelReplicas(replicas), Path(tmp) / f"s{n}.zarr",
                                   batch_size=batch_size, progress=False, overwrite=True, preview=False)
            seconds = time.perf_counter() - t0
            rates[n] = result.n_tiles / seconds
            busy = result.timings["model_busy"] / result.timings["wall"]
            each = result.timings["infer"] / (n * result.timings["wall"])
            print(f"{n} accelerator stand-in(s), {batch_s:.2f} s per batch of {batch_size}: {result.n_tiles} "
                  f"tiles in {seconds:.1f} s = {rates[n]:.1f} tiles/s; scaling {rates[n] / rates[1]:.2f}x "
                  f"(target >= {0.9 * n:.1f}x); some replica busy {100 * busy:.0f}% of the run, each "
                  f"{100 * each:.0f}% on average; longest "
                  f"idle gap {result.timings['longest_idle_gap'] * 1e3:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
