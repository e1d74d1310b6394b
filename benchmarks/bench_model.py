"""Seconds per tile and peak memory of SAM-Path model presets (random weights; speed does not depend on them).

    python benchmarks/bench_model.py                          # tiny presets on the CPU
    python benchmarks/bench_model.py --device cuda --presets sam_path_vit_b,hipt_only --precision bf16

Each preset runs in its own child process so that the peak memory reported is its own: peak RSS of the
process on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA. A tile is one model input at the preset's
input size (1024 px for the full-size presets); timing covers ``Predictor.predict`` (resize, normalise,
forward, softmax, copy back), after one warm-up batch. ``--output native`` (default) asks for the model's own
output grid, as ``wsiseg segment`` does (S/4 for SAM-Path); ``--output full`` upsamples to the tile size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

TINY = ["tiny", "tiny_sam_only", "tiny_hipt_only"]


def run_one(preset: str, device: str, batch: int, repeats: int, precision: str, threads: int,
            num_classes: int, output: str = "native", compile: bool = False) -> dict[str, Any]:
    import resource

    import numpy as np
    import psutil
    import torch

    from wsiseg.classes import ClassList
    from wsiseg.model import ModelConfig, SamPath, SamPathPredictor

    torch.set_num_threads(threads)
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # after imports, KiB on Linux
    cfg = ModelConfig.from_preset(preset, num_classes)
    model = SamPath(cfg)
    classes = ClassList.from_names([f"class{i}" for i in range(num_classes)])
    pred = SamPathPredictor(model, classes, device=device, precision=precision, compile=compile)
    s = cfg.input_size
    tiles = np.random.default_rng(0).integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
    cuda = pred.device.startswith("cuda")
    out_size = s // pred.output_stride if output == "native" else s
    t_compile = time.perf_counter()
    first = pred.predict(tiles, out_size)  # warm-up (allocations, kernels, cudnn/autotune, compilation)
    t_compile = time.perf_counter() - t_compile
    max_diff_vs_eager = None
    if compile:  # the compiled model computes what the eager one does, up to float rounding
        eager = SamPathPredictor(model, classes, device=device, precision=precision).predict(tiles, out_size)
        max_diff_vs_eager = float(np.abs(first - eager).max())
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(repeats):
        probs = pred.predict(tiles, out_size)
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / (repeats * batch)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-3)
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        mem_kind = "gpu_allocated"
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        mem_kind = "rss"
    return {
        "preset": preset, "variant": cfg.variant.value, "input_size": s, "output_size": out_size,
        "device": pred.device,
        "precision": precision, "batch": batch, "s_per_tile": dt, "tiles_per_s": 1 / dt,
        "peak_mb": peak_mb, "memory": mem_kind, "rss_after_imports_mb": baseline_mb,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "compiled": compile,
        "first_call_s": t_compile, "max_prob_diff_vs_eager": max_diff_vs_eager,
        "rss_now_mb": psutil.Process().memory_info().rss / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default=",".join(TINY),
                    help="comma-separated wsiseg.model.presets.MODEL_PRESETS names (default: tiny ones); "
                         "'all' = every preset")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    ap.add_argument("--batch", type=int, default=2, help="tiles per predict call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--output", default="native", choices=["native", "full"],
                    help="probabilities on the model's own grid (as segment asks) or upsampled to the tile")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (SamPathPredictor)")
    ap.add_argument("--json", action="store_true", help="print one JSON object per preset")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_one(a.child, a.device, a.batch, a.repeats, a.precision, a.threads, a.classes,
                                 a.output, a.compile)))
        return
    from wsiseg.model.presets import MODEL_PRESETS

    presets = list(MODEL_PRESETS) if a.presets == "all" else a.presets.split(",")
    if not a.json:
        print(f"{'preset':<16}{'variant':<16}{'size':>6}{'out':>5} {'device':<8}{'prec':<6}{'s/tile':>9}"
              f"{'tiles/s':>9}{'peak MB':>10} {'mem':<14}{'params M':>9}{'imports MB':>11}")
    failed = False
    for name in presets:
        cmd = [sys.executable, __file__, "--child", name, "--device", a.device, "--batch", str(a.batch),
               "--repeats", str(a.repeats), "--precision", a.precision, "--threads", str(a.threads),
               "--classes", str(a.classes), "--output", a.output] + (["--compile"] if a.compile else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            failed = True
            print(f"{name}: failed\n{proc.stderr.strip()[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        if a.json:
            print(json.dumps(r))
        else:
            print(f"{r['preset']:<16}{r['variant']:<16}{r['input_size']:>6}{r['output_size']:>5} "
                  f"{r['device']:<8}{r['precision']:<6}{r['s_per_tile']:>9.4f}{r['tiles_per_s']:>9.2f}"
                  f"{r['peak_mb']:>10.0f} {r['memory']:<14}"
                  f"{r['params_m']:>9.2f}{r['rss_after_imports_mb']:>11.0f}"
                  + (f"  compiled (first call {r['first_call_s']:.0f} s; max |p - eager| "
                     f"{r['max_prob_diff_vs_eager']:.1e})" if r["compiled"] else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
