"""SAM encoder attention kernels and whole-model throughput per kernel (prints figures; not a test).

    python benchmarks/bench_attention.py --device cuda --precision bf16          # on a GPU
    python benchmarks/bench_attention.py --device cpu --batch 1 --preset tiny    # smoke run

(1) One attention block of SAM ViT-B at 1024 px input: a global block (64 x 64 tokens) and a windowed
    block (14 x 14 windows), per :class:`~wsiseg.model.attention.AttentionKernel`, ms per tile, and the
    largest difference from segment-anything's own (``eager``) output relative to its largest value.
(2) The whole model (``Predictor.predict`` on the native output grid) per kernel: tiles/s, against the
    physical limit given by the model's FLOPs and the device's measured bf16 matmul rate.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from typing import Any

import numpy as np
import torch

from wsiseg.classes import ClassList
from wsiseg.model import ModelConfig, SamPath, SamPathPredictor
from wsiseg.model.attention import AttentionKernel, RelPosAttention


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn: Any, device: torch.device, repeats: int) -> float:
    fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def attention_blocks(device: torch.device, dtype: torch.dtype, batch: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    torch.manual_seed(0)
    for name, grid, n in [("global 64x64", (64, 64), batch), ("window 14x14", (14, 14), batch * 25)]:
        m = RelPosAttention(768, 12, grid, AttentionKernel.EAGER).to(device)
        with torch.no_grad():
            m.rel_pos_h.normal_(0, 0.5)
            m.rel_pos_w.normal_(0, 0.5)
        x = torch.randn(n, *grid, 768, device=device)
        ref = None
        for k, pad in [(k, True) for k in AttentionKernel] + [(AttentionKernel.FOLDED, False)]:
            m.kernel, m.pad_values = k, pad
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype,
                                                        enabled=dtype != torch.float32):
                y = m(x).float()
                dt = _time(partial(m, x), device, repeats)
            if ref is None:
                ref = y
            err = float((y - ref).abs().max() / ref.abs().max())
            label = k.value if pad else f"{k.value}-nopad"
            out[f"{name} {label}"] = {"ms_per_tile": 1000 * dt / batch, "rel_err": err}
            print(f"  {name:<14}{label:<14}{1000 * dt / batch:9.3f} ms/tile   rel. diff {err:.2e}",
                  flush=True)
    return out


def matmul_tflops(device: torch.device) -> float:
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    dt = _time(lambda: a @ a, device, 10)
    return 2 * 8192**3 / dt / 1e12


def whole_model(preset: str, device: str, precision: str, batch: int, repeats: int,
                compile_: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(preset, 5)
    model = SamPath(cfg)
    classes = ClassList.from_names([f"c{i}" for i in range(5)])
    pred = SamPathPredictor(model, classes, device=device, precision=precision)
    s = cfg.input_size
    tiles = np.random.default_rng(0).integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
    kernels = ([(k, True) for k in AttentionKernel] + [(AttentionKernel.FOLDED, False)]
               if model.sam_encoder is not None else [(AttentionKernel.FOLDED, True)])
    for k, pad in kernels:
        if model.sam_encoder is not None:
            model.sam_encoder.set_attention(k, pad)
        dev = torch.device(pred.device)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        dt = _time(lambda: pred.predict(tiles, s // pred.output_stride), dev, repeats)
        label = k.value if pad else f"{k.value}-nopad"
        out[label] = {"tiles_per_s": batch / dt}
        mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
        print(f"  {preset} {precision} batch {batch} {label:<13}: {batch / dt:8.1f} tiles/s"
              f"  (peak GPU {mem:.1f} GiB)", flush=True)
    if compile_ and device.startswith("cuda"):
        model.sam_encoder and model.sam_encoder.set_attention(AttentionKernel.FOLDED)
        t0 = time.perf_counter()
        compiled = torch.compile(model)
        pred.model = compiled  # type: ignore[assignment]
        pred.predict(tiles, s // pred.output_stride)
        dev = torch.device(pred.device)
        dt = _time(lambda: pred.predict(tiles, s // pred.output_stride), dev, repeats)
        out["folded+compile"] = {"tiles_per_s": batch / dt, "compile_s": time.perf_counter() - t0}
        print(f"  {preset} {precision} batch {batch} folded+compile: {batch / dt:8.1f} tiles/s "
              f"(compile {out['folded+compile']['compile_s']:.0f} s)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--preset", default="sam_path_vit_b")
    ap.add_argument("--batches", default="8,16,32", help="tiles per predict call, comma-separated")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA only)")
    ap.add_argument("--skip-blocks", action="store_true")
    a = ap.parse_args()
    dev = torch.device(a.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision, torch.float32)
    res: dict[str, Any] = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                           "torch": torch.__version__}
    if dev.type == "cuda":
        res["matmul_bf16_tflops"] = matmul_tflops(dev)
        print(f"bf16 matmul: {res['matmul_bf16_tflops']:.0f} TFLOP/s", flush=True)
    if not a.skip_blocks:
        print("(1) attention blocks of SAM ViT-B at 1024 px", flush=True)
        res["blocks"] = attention_blocks(dev, dtype, 8, a.repeats)
    print("(2) whole model", flush=True)
    res["model"] = {}
    batches = [int(b) for b in a.batches.split(",")]
    for i, b in enumerate(batches):
        res["model"][b] = whole_model(a.preset, a.device, a.precision, b, a.repeats,
                                      a.compile and i == len(batches) - 1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
