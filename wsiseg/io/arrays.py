"""The array interface the segmentation reader hands out and the exporter reads (no zarr import here)."""

from __future__ import annotations

from typing import Any, Protocol


class LevelArray(Protocol):
    """One lazily read pyramid level (a zarr array, or any numpy array): its shape and numpy slicing."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: Any) -> Any: ...
