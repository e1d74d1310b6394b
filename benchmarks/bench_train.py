"""Epoch time of `wsiseg train` with and without the embedding cache.

Builds a folder data set from synthetic slides (exact labels), then times one training epoch from images
(encoders run every step) and one from cached encoder features (after the one-off cache fill, timed
separately). Prints the figures and the ratio.

    python benchmarks/bench_train.py                                  # tiny preset, 256 px, CPU
    python benchmarks/bench_train.py --preset sam_path_vit_b --input-size 512 --images 8
    python benchmarks/bench_train.py --preset sam_path_vit_b --device cuda --input-size 1024
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wsiseg.slide import open_slide
from wsiseg.synthetic import SYNTHETIC_CLASSES, write_synthetic_slide
from wsiseg.train.cache import EmbeddingCache
from wsiseg.train.config import TrainConfig
from wsiseg.train.datasets import build_dataset
from wsiseg.train.trainer import Trainer, build_model


def make_data(root: Path, n_images: int, size: int) -> Path:
    data = root / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    side0 = size * 4  # read at 2 um/px from a 0.5 um/px slide
    truth = write_synthetic_slide(root / "s.svs", side0 * 2, side0 * ((n_images + 1) // 2), mpp=0.5, seed=0)
    with open_slide(root / "s.svs") as slide:
        for i in range(n_images):
            x0, y0 = (i % 2) * side0, (i // 2) * side0
            Image.fromarray(slide.read_region(x0, y0, size, size, 2.0)).save(data / "images" / f"im{i}.png")
            Image.fromarray(truth.labels_region(x0, y0, size, size, 2.0)).save(data / "masks" / f"im{i}.png")
    lines = ["classes:"] + [f"  - {{name: {c.name}, value: {i}}}" for i, c in enumerate(SYNTHETIC_CLASSES)]
    (data / "classes.yaml").write_text("\n".join(lines) + "\n")
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--input-size", type=int, default=256)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_data(root, args.images, args.input_size)
        ds = build_dataset("folder", data, "all", patch_size=args.input_size)
        common = dict(dataset="folder", data_dir=str(data), patch_size=args.input_size, preset=args.preset,
                      input_size=args.input_size, epochs=1, batch_size=args.batch_size, accumulate=1,
                      num_workers=0, device=args.device, val_fraction=0.0, augment=["flip", "rot90"])
        # cache fill (one-off), timed on its own
        cfg_cache = TrainConfig.from_dict({**common, "out_dir": str(root / "cached"),
                                           "cache_embeddings": str(root / "cache")})
        model = build_model(cfg_cache, len(ds.classes)).to(torch.device(args.device))
        t0 = time.perf_counter()
        EmbeddingCache(root / "cache", model).fill(ds, device=torch.device(args.device),
                                                   batch_size=args.batch_size, progress=False)
        fill_s = time.perf_counter() - t0
        # epoch_seconds: the training epoch itself (not checkpoint writing or the plot)
        cached_s = Trainer(cfg_cache, ds, None, progress=False).fit().history[0]["epoch_seconds"]
        cfg_img = TrainConfig.from_dict({**common, "out_dir": str(root / "images")})
        image_s = Trainer(cfg_img, ds, None, progress=False).fit().history[0]["epoch_seconds"]
        n_feat = np.load(next((root / "cache").glob("*/*.npy"))).nbytes
    print(f"preset {args.preset}, input {args.input_size} px, {args.images} patches, "
          f"batch {args.batch_size}, device {args.device}, {args.threads} threads")
    print(f"epoch from images (encoders every step): {image_s:8.2f} s")
    print(f"epoch from cached features:              {cached_s:8.2f} s")
    print(f"one-off cache fill:                      {fill_s:8.2f} s "
          f"({n_feat / 1e6:.2f} MB per patch, float16)")
    print(f"speed-up per epoch: {image_s / cached_s:.1f}x")


if __name__ == "__main__":
    main()
