"""What a vanilla-SAM baseline has to provide (torch-free protocols; implementations in :mod:`.sam`)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class PointPromptSegmenter(Protocol):
    """Segments one object per positive dot prompt, each prompt on its own (no interaction between them)."""

    def segment(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """``image`` uint8 ``(H, W, 3)`` RGB, ``points`` ``(n, 2)`` pixel ``(x, y)`` -> bool ``(n, H, W)``.

        Implementations compute what they need of the image once (SAM: one image embedding) and then one
        mask per point. With no points they return ``(0, H, W)`` and need not look at the image.
        """
        ...

    def provenance(self) -> dict[str, Any]:
        """JSON-serialisable description: model, weights (sha256), settings."""
        ...


@runtime_checkable
class MaskGenerator(Protocol):
    """Segments everything in an image without prompts ("segment everything"); masks carry no class."""

    def generate(self, image: np.ndarray) -> np.ndarray:
        """``image`` uint8 ``(H, W, 3)`` RGB -> bool ``(m, H, W)``, one mask per object found."""
        ...

    def provenance(self) -> dict[str, Any]:
        """JSON-serialisable description: model, weights (sha256), settings."""
        ...
