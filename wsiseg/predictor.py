"""The model interface: what :mod:`wsiseg.infer` and :mod:`wsiseg.train.evaluate` consume.

Structural and torch-free, so the slide side never imports a model: :class:`wsiseg.model.SamPathPredictor`
implements it, as do the reference models in :mod:`wsiseg.infer.reference_models`. It lives at the top
level because :mod:`wsiseg.model` may not import :mod:`wsiseg.infer`, yet both name it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from wsiseg.classes import ClassList


@runtime_checkable
class Predictor(Protocol):
    """RGB uint8 tiles in, class probabilities out.

    ``classes``: the k output classes; ``mpp``: resolution it was trained at (um/px) or None;
    ``tile_size``: default tile side in pixels at ``mpp``; ``device``: where it runs ("cpu", "cuda", ...);
    ``output_stride``: input pixels per pixel of the model's own output grid (SAM-Path: 4, its mask decoder
    predicts at 1/4 of the input; a per-pixel model: 1). ``wsiseg segment`` writes at that grid by default.

    Optional: ``lanes``, how many threads a run lets call ``predict`` at once (default 1; see
    :func:`lanes_of`). :class:`~wsiseg.model.SamPathPredictor` on CUDA has 2: while one thread's tiles are
    copied in or its probabilities back, the other's forward pass keeps the GPU busy.
    """

    classes: ClassList
    mpp: float | None
    tile_size: int
    device: str
    output_stride: int

    def predict(self, tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 RGB -> ``(N, k, s, s)`` float32 probabilities summing to 1 over k, with
        ``s = out_size`` (default ``H``; tiles are square). ``H`` is a multiple of ``out_size``: each output
        pixel covers ``H // out_size`` input pixels."""
        ...

    def provenance(self) -> dict[str, Any]:
        """JSON-serialisable description: model name/config, weights sha256, version."""
        ...


def lanes_of(model: Predictor) -> int:
    """How many threads may call ``model.predict`` at once: its ``lanes`` attribute, 1 when it has none."""
    return max(1, int(getattr(model, "lanes", 1)))
