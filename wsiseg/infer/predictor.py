"""The model interface :mod:`wsiseg.infer` consumes (structural; :mod:`wsiseg.model` implements it)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from wsiseg.classes import ClassList


@runtime_checkable
class Predictor(Protocol):
    """RGB uint8 tiles in, class probabilities out.

    ``classes``: the k output classes; ``mpp``: resolution it was trained at (um/px) or None;
    ``tile_size``: default tile side in pixels at ``mpp``; ``device``: where it runs ("cpu", "cuda", ...).
    """

    classes: ClassList
    mpp: float | None
    tile_size: int
    device: str

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 RGB -> ``(N, k, H, W)`` float32 probabilities summing to 1 over k."""
        ...

    def provenance(self) -> dict[str, Any]:
        """JSON-serialisable description: model name/config, weights sha256, version."""
        ...
