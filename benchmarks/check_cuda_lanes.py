"""Check and time the CUDA lanes (``wsiseg.model.cuda_lanes``) on a GPU machine: the first step of
``benchmarks/gpu_run.sh``. Exits 1 when a check fails; needs CUDA (exits 0 with a note without it).

1. Equality: the predictor's lane path (pinned buffers, a stream per lane, asynchronous copies) against the
   same model on the default stream with blocking copies, fp32: max |p - p_ref| (expected 0, or float noise
   where cuDNN picks another algorithm), also with two threads calling at once on different batches.
   Batch sizes vary, so a lane's pinned buffers grow and smaller batches use a view of them.
2. Overlap: ``--preset`` (default sam_path_vit_b at 1024 px, ``--precision`` bf16) on ``--tiles`` random tiles
   in batches of ``--batch``: tiles/s on the default stream with blocking copies (the path before lanes),
   with one thread on a lane, and with two threads sharing the model and the GPU (each on its lane). The
   last is what ``segment`` gets with two model lanes on one GPU.

    python benchmarks/check_cuda_lanes.py [--preset sam_path_vit_b] [--input-size 1024] [--batch 16]
        [--tiles 256] [--precision bf16]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from wsiseg.model import SamPathPredictor
from wsiseg.model.sam_path import ModelConfig, SamPath
from wsiseg.synthetic import SYNTHETIC_CLASSES


def _reference(pred: SamPathPredictor, tiles: np.ndarray, size: int) -> np.ndarray:
    """The default-stream, blocking-copy path: what the predictor did before lanes."""
    with torch.inference_mode():
        x = torch.from_numpy(tiles).to(torch.device(pred.device))
        probs, _ = pred._device_forward(x, (size, size))
        return probs.cpu().numpy()


def check_equal(batch: int) -> bool:
    """fp32 tiny preset: the lane path against the default stream, alone and from two threads at once."""
    torch.manual_seed(0)
    model = SamPath(ModelConfig.from_preset("tiny", len(SYNTHETIC_CLASSES), input_size=256))
    pred = SamPathPredictor(model, SYNTHETIC_CLASSES, mpp=1.0, tile_size=256, device="cuda")
    rng = np.random.default_rng(0)
    # sizes vary: a buffer grows (3 -> 8 -> 12) and smaller batches use a view of a larger one
    sizes = [3, batch, max(1, batch // 2), batch + 4]
    batches = [rng.integers(0, 256, (n, 256, 256, 3), dtype=np.uint8) for n in sizes]
    refs = [_reference(pred, b, 64) for b in batches]
    alone = max(float(np.abs(pred.predict(b, 64) - r).max()) for b, r in zip(batches, refs, strict=True))
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda b: pred.predict(b, 64), batches * 3))
    both = max(float(np.abs(p - r).max()) for p, r in zip(together, refs * 3, strict=True))
    print(f"equality (fp32, tiny preset): lane vs default stream max |dp| = {alone:.2e}; two threads at once "
          f"{both:.2e}")
    return alone < 1e-5 and both < 1e-5


def time_lanes(preset: str, input_size: int, batch: int, n_tiles: int, precision: str) -> None:
    torch.manual_seed(0)
    model = SamPath(ModelConfig.from_preset(preset, len(SYNTHETIC_CLASSES), input_size=input_size))
    pred = SamPathPredictor(model, SYNTHETIC_CLASSES, mpp=0.25, tile_size=input_size, device="cuda",
                            precision=precision)
    tiles = np.random.default_rng(0).integers(0, 256, (batch, input_size, input_size, 3), dtype=np.uint8)
    out = input_size // pred.output_stride
    n_batches = max(2, n_tiles // batch)
    pred.predict(tiles, out)  # warm-up
    _reference(pred, tiles, out)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n_batches):  # the path before lanes: default stream, pageable blocking copies
        _reference(pred, tiles, out)
    before = n_batches * batch / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        pred.predict(tiles, out)
    one = n_batches * batch / (time.perf_counter() - t0)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: pred.predict(tiles, out), range(2)))  # each thread's lane and buffers
        t0 = time.perf_counter()
        list(pool.map(lambda _: pred.predict(tiles, out), range(n_batches)))
        two = n_batches * batch / (time.perf_counter() - t0)
    print(f"{preset} at {input_size} px, {precision}, batch {batch}: default stream with blocking copies "
          f"{before:.1f} tiles/s; one lane {one:.1f} tiles/s; two lanes {two:.1f} tiles/s "
          f"({two / before:.2f}x the default stream)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sam_path_vit_b")
    ap.add_argument("--input-size", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tiles", type=int, default=256)
    ap.add_argument("--precision", default="bf16")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    ok = check_equal(8)
    time_lanes(args.preset, args.input_size, args.batch, args.tiles, args.precision)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
