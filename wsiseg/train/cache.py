"""The embedding cache: frozen-encoder features computed once per patch and reused every epoch.

Layout: ``<cache-dir>/<encoder key>/<sample id>-<file key>.npy``, float16 ``(C, G, G)`` (``C`` = C_fs + C_fp,
``G = input_size / 16``; 1152 x 64 x 64 = 9.4 MB per 1024-px patch for ViT-B + ViT-S). The encoder key
hashes the encoder config (variant, presets, input size) and every encoder weight, so another model or
other weights never reuse stale features; the file key hashes the source image's path, size and mtime.
Files are written atomically, so an interrupted fill resumes where it stopped. Training from the cache
updates R, the class prompts and the mask decoder; the only augmentations are flips and rot90 of the feature
grid and the label together.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from wsiseg.errors import ConfigError, OutputError
from wsiseg.io.atomic import replacing
from wsiseg.model import SamPath, to_model_input
from wsiseg.train.datasets import PatchDataset

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def encoder_key(model: SamPath) -> str:
    """A hex digest of the encoder config and weights (what the cached features depend on)."""
    if model.config.train_encoders:
        raise ConfigError("the embedding cache needs frozen encoders (train_encoders: false)")
    h = hashlib.sha256()
    cfg = model.config.to_dict()
    encoder_cfg = {k: cfg[k] for k in ("variant", "sam", "hipt", "input_size", "token_grid") if k in cfg}
    h.update(json.dumps(encoder_cfg, sort_keys=True).encode())
    for enc in model.encoders():
        for name, tensor in sorted(enc.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


class EmbeddingCache:
    """Features of the patches of one or more data sets for one model's encoders (see module docstring)."""

    def __init__(self, root: Path | str, model: SamPath) -> None:
        self.model = model
        self.key = encoder_key(model)
        self.dir = Path(root) / self.key
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create embedding cache {self.dir}: {exc.strerror or exc}") from exc

    def path(self, dataset: PatchDataset, index: int) -> Path:
        ref = dataset.patches[index]
        try:
            st = ref.image_path.stat()
            file_key = f"{ref.image_path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            file_key = str(ref.image_path)
        digest = hashlib.sha1(file_key.encode()).hexdigest()[:10]
        return self.dir / f"{dataset.name}_{_SAFE.sub('_', ref.sample_id)}-{digest}.npy"

    def fill(self, dataset: PatchDataset, *, device: torch.device, batch_size: int = 8,
             progress: bool = True) -> int:
        """Compute and store the features of every patch not cached yet; returns how many were computed.

        Memory is bounded by ``batch_size`` patches.
        """
        todo = [i for i in range(len(dataset)) if not self.path(dataset, i).is_file()]
        if not todo:
            return 0
        model = self.model.to(device).eval()
        bar = tqdm(total=len(todo), desc=f"caching {dataset.name} embeddings", unit="patch",
                   disable=not progress)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            tiles = np.stack([dataset[i][0] for i in chunk])
            with torch.inference_mode():
                x = to_model_input(torch.from_numpy(tiles).to(device), model.input_size)
                feats = model.encode(x).to(torch.float16).cpu().numpy()
            for i, f in zip(chunk, feats, strict=True):
                self._write(self.path(dataset, i), f)
            bar.update(len(chunk))
        bar.close()
        return len(todo)

    def load(self, dataset: PatchDataset, index: int) -> np.ndarray:
        """Features float16 ``(C, G, G)`` of patch ``index`` (must have been filled)."""
        features: np.ndarray = np.load(self.path(dataset, index))
        return features

    @staticmethod
    def _write(path: Path, array: np.ndarray) -> None:
        try:
            with replacing(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, array)
        except OSError as exc:
            raise OutputError(f"cannot write embedding cache file {path}: {exc.strerror or exc}") from exc
