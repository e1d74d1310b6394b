"""Torch-free reference models implementing :class:`~wsiseg.predictor.Predictor`.

- :class:`NullModel` predicts constant probabilities; it measures what the pipeline around a model (reading,
  tissue check, stitching, writing) sustains, and is ``wsiseg segment --model null``.
- :class:`PatternModel` predicts smooth, varied multi-class probabilities at no model cost: constant
  tiles compress far better than real predictions, so it measures the write side as a real model loads it.
- :class:`ColourModel` predicts, per pixel, the class whose palette colour is nearest to the locally averaged
  tile colour: the "oracle" for synthetic slides (:attr:`wsiseg.synthetic.slides.SyntheticTruth.palette`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from wsiseg._version import __version__
from wsiseg.classes import ClassList
from wsiseg.errors import ConfigError


def _check_tiles(tiles: np.ndarray, out_size: int | None) -> int:
    """Validate ``(N, H, W, 3)`` uint8 square tiles; return the output side (``out_size`` or ``H``)."""
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8 or tiles.shape[1] != tiles.shape[2]:
        raise ValueError(f"expected (N, H, H, 3) uint8 tiles, got {tiles.shape} {tiles.dtype}")
    size = tiles.shape[1] if out_size is None else int(out_size)
    if size <= 0 or tiles.shape[1] % size:
        raise ValueError(f"output side {size} does not divide the tile side {tiles.shape[1]}")
    return size


def block_mean(probs: np.ndarray, factor: int) -> np.ndarray:
    """``(N, k, H, W)`` -> ``(N, k, H / factor, W / factor)``: the mean of each ``factor``-pixel square."""
    if factor == 1:
        return probs
    n, k, h, w = probs.shape
    out: np.ndarray = probs.reshape(n, k, h // factor, factor, w // factor, factor).mean(
        axis=(3, 5), dtype=np.float32)
    return out


class NullModel:
    """Constant probabilities ``probs`` (default: uniform) for every pixel; costs nothing to run.

    Args:
        classes: output classes.
        mpp: target resolution in um/px (None: the caller must give one).
        tile_size: tile side in pixels at ``mpp``.
        probs: ``k`` probabilities summing to 1.
        output_stride: its native output grid; 4 by default, SAM-Path's, so that ``--model null`` costs the
            pipeline exactly what a real model's output does.
    """

    device = "cpu"

    def __init__(self, classes: ClassList, mpp: float | None, tile_size: int,
                 probs: Sequence[float] | None = None, output_stride: int = 4) -> None:
        k = len(classes)
        p = np.full(k, 1.0 / k, np.float32) if probs is None else np.asarray(probs, np.float32)
        if p.shape != (k,) or abs(float(p.sum()) - 1.0) > 1e-5 or (p < 0).any():
            raise ConfigError(f"NullModel needs {k} non-negative probabilities summing to 1, got {list(p)}")
        if output_stride < 1:
            raise ConfigError(f"output stride must be at least 1, got {output_stride}")
        self.classes, self.mpp, self.tile_size = classes, mpp, tile_size
        self.output_stride = int(output_stride)
        self._p = p

    def predict(self, tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        """``(N, H, H, 3)`` uint8 -> ``(N, k, s, s)`` float32 (``s = out_size or H``; a read-only broadcast
        view, no allocation)."""
        s = _check_tiles(tiles, out_size)
        return np.broadcast_to(self._p[None, :, None, None], (tiles.shape[0], len(self.classes), s, s))

    def provenance(self) -> dict[str, Any]:
        return {"name": "null", "probs": [float(v) for v in self._p], "output_stride": self.output_stride,
                "version": __version__}


class PatternModel:
    """Realistic-looking probabilities at (almost) no cost: each tile gets one of ``n_patterns`` fixed,
    smooth ``k``-class probability fields (a softmax of low-frequency random fields, sharp enough to give
    class borders), chosen by a cheap hash of the tile's pixels so the same tile always gets the same one.

    The fields are made once per output size (float32 ``(n_patterns, k, s, s)``); :meth:`predict` copies
    them out, as a real model's output is copied from the device. Same arguments as :class:`NullModel`.
    """

    device = "cpu"

    def __init__(self, classes: ClassList, mpp: float | None, tile_size: int, n_patterns: int = 16,
                 output_stride: int = 4, seed: int = 0) -> None:
        if output_stride < 1 or n_patterns < 1:
            raise ConfigError("the output stride and the number of patterns must be at least 1")
        self.classes, self.mpp, self.tile_size = classes, mpp, tile_size
        self.output_stride, self.n_patterns, self.seed = int(output_stride), int(n_patterns), int(seed)
        self._bank: dict[int, np.ndarray] = {}

    def _patterns(self, size: int) -> np.ndarray:
        bank = self._bank.get(size)
        if bank is None:
            rng = np.random.default_rng(self.seed)
            k = len(self.classes)
            yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
            fields = np.zeros((self.n_patterns, k, size, size), np.float32)
            for _ in range(4):  # a few low-frequency waves per class
                fx, fy, phase = rng.uniform(0.5, 3.0, (3, self.n_patterns, k, 1, 1)).astype(np.float32)
                fields += np.sin(2 * np.pi * (fx * xx + fy * yy) + 2 * np.pi * phase)
            fields *= np.float32(4.0)  # sharpness of the class borders
            fields -= fields.max(axis=1, keepdims=True)
            np.exp(fields, out=fields)
            fields /= fields.sum(axis=1, keepdims=True)
            bank = self._bank[size] = fields
        return bank

    def predict(self, tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        """``(N, H, H, 3)`` uint8 -> ``(N, k, s, s)`` float32 (``s = out_size or H``), a fresh array."""
        s = _check_tiles(tiles, out_size)
        step = max(1, tiles.shape[1] // 16)
        keys = tiles[:, ::step, ::step].reshape(tiles.shape[0], -1).sum(axis=1, dtype=np.int64)
        out: np.ndarray = self._patterns(s)[keys % self.n_patterns]
        return out

    def provenance(self) -> dict[str, Any]:
        return {"name": "pattern", "n_patterns": self.n_patterns, "seed": self.seed,
                "output_stride": self.output_stride, "version": __version__}


class ColourModel:
    """Nearest-palette-colour classifier on a ``(2 * radius_px + 1)``-pixel box mean of the tile.

    Probabilities are ``softmax(-d^2 / (2 sigma^2))`` over the squared RGB distances ``d^2`` to the
    palette colours, so they are smooth (and blend meaningfully) but near one-hot away from borders.

    Args:
        classes: output classes; ``palette[i]`` is the mean RGB (0..255) of class ``i``.
        palette: ``(k, 3)`` float colours.
        mpp: resolution (um/px) the palette holds at; tile_size: default tile side.
        radius_px: half-width of the averaging box in pixels; sigma: softness in RGB units.
        output_stride: its native output grid (1: per pixel; k > 1: means of k x k pixel probabilities).
    """

    device = "cpu"

    def __init__(self, classes: ClassList, palette: np.ndarray, mpp: float | None, tile_size: int,
                 radius_px: int = 7, sigma: float = 8.0, output_stride: int = 1) -> None:
        palette = np.asarray(palette, np.float32)
        if palette.shape != (len(classes), 3):
            raise ConfigError(f"palette of shape {palette.shape} for {len(classes)} classes")
        self.classes, self.mpp, self.tile_size = classes, mpp, tile_size
        self.palette, self.radius_px, self.sigma = palette, int(radius_px), float(sigma)
        if output_stride < 1:
            raise ConfigError(f"output stride must be at least 1, got {output_stride}")
        self.output_stride = int(output_stride)

    def predict(self, tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        """``(N, H, H, 3)`` uint8 -> ``(N, k, s, s)`` float32 probabilities (``s = out_size or H``; per-pixel
        probabilities averaged over ``H / s`` pixel squares)."""
        s = _check_tiles(tiles, out_size)
        size = 2 * self.radius_px + 1
        mean = ndimage.uniform_filter(tiles.astype(np.float32), size=(1, size, size, 1), mode="reflect")
        d2 = np.stack([((mean - c) ** 2).sum(axis=-1) for c in self.palette], axis=1)  # (N, k, H, W)
        logits = -d2 / (2.0 * self.sigma**2)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        probs: np.ndarray = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        return block_mean(probs, tiles.shape[1] // s)

    def provenance(self) -> dict[str, Any]:
        return {"name": "colour", "palette": self.palette.round(3).tolist(), "radius_px": self.radius_px,
                "sigma": self.sigma, "output_stride": self.output_stride, "version": __version__}
