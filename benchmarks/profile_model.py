"""Where a model's GPU time goes: ``torch.profiler`` over a few ``predict`` calls, the kernels that take
the most CUDA time (prints a table; not a test).

    python benchmarks/profile_model.py --preset sam_path_vit_b --batch 16 --precision bf16
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from wsiseg.classes import ClassList
from wsiseg.model import ModelConfig, SamPath, SamPathPredictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sam_path_vit_b")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--rows", type=int, default=25)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(a.preset, 5)
    pred = SamPathPredictor(SamPath(cfg), ClassList.from_names([f"c{i}" for i in range(5)]), device="cuda",
                            precision=a.precision)
    s = cfg.input_size
    tiles = np.random.default_rng(0).integers(0, 256, (a.batch, s, s, 3), dtype=np.uint8)
    pred.predict(tiles, s // 4)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(a.calls):
            pred.predict(tiles, s // 4)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=a.rows, max_name_column_width=70))


if __name__ == "__main__":
    main()
