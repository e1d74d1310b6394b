"""Cost of each Fp choice per 1024 px tile: HIPT ViT-S and the pathology foundation models.

    python benchmarks/bench_encoders.py                       # CPU: FLOPs, sizes, cache cost, CPU time
    python benchmarks/bench_encoders.py --device cuda --batches 1,8,32   # + tiles/s and memory in bf16

Per encoder: parameters and width; FLOPs of Fp alone and of the whole SAM-Path ViT-B + Fp for one 1024 px
tile (counted by ``torch.utils.flop_counter`` on the meta device: 2 FLOPs per multiply-add, attention
included), for patch-14 models under both token-grid choices; the embedding cache's disk cost per patch
(float16 ``(768 + C) x 64 x 64``); the weights of the whole model as the predictor holds them in bf16 runs
(fp32 parameters, autocast's bf16 copies beside them); CPU milliseconds of Fp alone at a small input
(``--cpu-size`` px, batch 1, fp32, random weights: speed does not depend on them). Without a GPU the memory
at batch 1/8/32 is an estimate (those weights + batch x the features kept and the largest transient of one
block, bf16); with ``--device cuda`` it is measured (``max_memory_allocated`` around ``Predictor.predict``),
with tiles/s.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

ENCODERS = ["hipt_vit_s", "uni", "uni2_h", "virchow2", "h_optimus_0", "prov_gigapath"]
GIB = 1024 ** 3


def _flops(model: Any, x: Any, fn: Any) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(model, x)
    return float(counter.get_total_flops())


def static_costs(name: str, grid: str) -> dict[str, Any]:
    """FLOPs, sizes and cache cost of SAM-Path ViT-B with Fp ``name`` (no memory: meta device)."""
    import torch

    from wsiseg.model import ModelConfig, SamPath

    with torch.device("meta"):
        model = SamPath(ModelConfig.from_preset("sam_path_vit_b", 5, pathology_encoder=name, token_grid=grid))
        x = torch.empty(1, 3, 1024, 1024)
        fp = model.pathology_encoder
        assert fp is not None
        fp_flops = _flops(fp, x, lambda m, t: m(t))
        all_flops = _flops(model, x, lambda m, t: m(t))
    fp_params = sum(p.numel() for p in fp.parameters())
    all_params = sum(p.numel() for p in model.parameters())
    width = fp.out_channels
    tokens = (getattr(fp, "fp_input_size", 1024) // getattr(fp, "patch", 16)) ** 2
    return {"encoder": name, "token_grid": grid, "fp_params_m": fp_params / 1e6, "width": width,
            "fp_tokens": tokens, "fp_tflop": fp_flops / 1e12, "model_tflop": all_flops / 1e12,
            "weights_gib": all_params * (4 + 2) / GIB,
            "cache_mb_per_patch": (768 + width) * 64 * 64 * 2 / 1e6,
            "est_gib": {b: estimate_memory(all_params, fp, tokens, b) for b in (1, 8, 32)}}


def estimate_memory(params: int, fp: Any, tokens: int, batch: int) -> float:
    """bf16 inference memory (GiB), an estimate: the weights (fp32, and autocast's bf16 copies) + batch x
    (the concatenated features and the decoder's 256 x 256 output, kept, plus the largest transient of one
    ViT block of either encoder: its tokens x (MLP hidden + 4 x width), attention fused), bf16."""
    vit = getattr(fp, "vit", None)
    hidden = vit.blocks[0].mlp.fc1.out_features if vit is not None else 4 * fp.out_channels
    fp_block = tokens * (hidden + 4 * fp.out_channels)
    sam_block = 4096 * (3072 + 4 * 768)
    kept = (768 + fp.out_channels) * 4096 + 6 * 256 * 256 * 4
    return (params * (4 + 2) + batch * 2 * (max(fp_block, sam_block) + kept)) / GIB


def _filled(module: Any, device: str) -> Any:
    """``module`` built on the meta device, materialised on ``device`` with random values (seconds, where
    timm's own initialisation of a ViT-g takes ~25 s on 2 cores; speed does not depend on the values)."""
    import torch

    module = module.to_empty(device=device).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.02)
        for key, buf in module.named_buffers():  # constants that are not parameters
            if buf.is_floating_point():
                buf.copy_(torch.ones_like(buf) if "scale" in key or "std" in key else torch.zeros_like(buf))
    return module


def cpu_ms(name: str, size: int, grid: str, repeats: int) -> float:
    """Fp alone, fp32, batch 1, ``size`` px model input, on the CPU (random weights)."""
    import torch

    from wsiseg.model.presets import build_pathology_encoder

    with torch.device("meta"):
        enc = build_pathology_encoder(name, size, pos_grid=14 if name.startswith("hipt") else None,
                                      token_grid=grid)
    enc = _filled(enc, "cpu")
    with torch.no_grad():
        x = torch.randn(1, 3, size, size)
        enc(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            enc(x)
    return (time.perf_counter() - t0) / repeats * 1e3


def gpu_figures(name: str, grid: str, batches: list[int], repeats: int, device: str = "cuda"
                ) -> dict[int, Any]:
    """tiles/s and peak memory of ``Predictor.predict`` in bf16 at 1024 px, per batch size."""
    import numpy as np
    import torch

    from wsiseg.classes import ClassList
    from wsiseg.model import ModelConfig, SamPath, SamPathPredictor

    with torch.device("meta"):
        model = SamPath(ModelConfig.from_preset("sam_path_vit_b", 5, pathology_encoder=name, token_grid=grid))
    model = _filled(model, device)
    pred = SamPathPredictor(model, ClassList.from_names([f"c{i}" for i in range(5)]), device=device,
                            precision="bf16")
    cuda = device.startswith("cuda")
    out: dict[int, Any] = {}
    for batch in batches:
        tiles = np.random.default_rng(0).integers(0, 256, (batch, 1024, 1024, 3), dtype=np.uint8)
        try:
            pred.predict(tiles, 256)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(repeats):
                pred.predict(tiles, 256)
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            out[batch] = {"tiles_s": round(batch * repeats / seconds, 2),
                          "peak_gib": round(torch.cuda.max_memory_allocated() / GIB, 2) if cuda else None}
        except torch.OutOfMemoryError:
            out[batch] = "OOM"
        if cuda:
            torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", default=",".join(ENCODERS))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--cpu-size", type=int, default=224, help="model input (px) for the CPU timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-cpu-time", action="store_true")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args()
    import torch

    from wsiseg.model.presets import has_token_grid_choice

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.encoders.split(","):
        patch14 = has_token_grid_choice(name)
        for grid in ("resize_input", "resample_features") if patch14 else ("resize_input",):
            row = static_costs(name, grid)
            if not args.skip_cpu_time:
                row["cpu_ms"] = cpu_ms(name, args.cpu_size, grid, args.repeats)
            if args.device == "cuda":
                row["gpu"] = gpu_figures(name, grid, [int(b) for b in args.batches.split(",")], args.repeats)
            rows.append(row)
            est = " / ".join(f"{row['est_gib'][b]:.1f}" for b in (1, 8, 32))
            print(f"{name:14s} {grid:17s} Fp {row['fp_params_m']:7.1f}M x{row['width']:5d}  tokens "
                  f"{row['fp_tokens']:5d}  Fp {row['fp_tflop']:6.2f} TFLOP  model {row['model_tflop']:6.2f} "
                  f"TFLOP/tile  weights {row['weights_gib']:.2f} GiB  "
                  f"cache {row['cache_mb_per_patch']:.1f} MB/patch  est. GiB b1/8/32 {est}"
                  + (f"  CPU {row['cpu_ms']:.0f} ms @{args.cpu_size}px" if "cpu_ms" in row else "")
                  + (f"  GPU {row['gpu']}" if "gpu" in row else ""), flush=True)
    base = next((r for r in rows if r["encoder"] == "hipt_vit_s"), None)
    if base is not None:
        for r in rows:
            ratio = r["model_tflop"] / base["model_tflop"]
            print(f"ratio {r['encoder']}/{r['token_grid']}: model FLOPs x{ratio:.2f} of the paper's SAM-Path")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
