"""Reused float32 buffers for chunk accumulators: no fresh pages are faulted in for every chunk."""

from __future__ import annotations

import math
import threading

import numpy as np

#: Released buffers kept for reuse (flat; any chunk shape that fits is carved out of one).
POOL_SIZE = 2


class BufferPool:
    """A few flat float32 buffers; :meth:`zeros` carves an array out of the smallest that fits.

    Thread-safe: writer threads give buffers back (:meth:`recycle`) while the stitching thread takes them.
    """

    def __init__(self, size: int = POOL_SIZE) -> None:
        self._size = size
        self._flats: list[np.ndarray] = []
        self._lock = threading.Lock()

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        """A zeroed float32 array of ``shape``: a view into a pooled buffer, or fresh memory."""
        n = math.prod(shape)
        with self._lock:
            fits = [k for k, flat in enumerate(self._flats) if flat.size >= n]
            flat = self._flats.pop(min(fits, key=lambda k: self._flats[k].size)) if fits else None
        if flat is None:
            return np.zeros(shape, dtype=np.float32)
        data = flat[:n].reshape(shape)
        data.fill(0)
        return data

    def recycle(self, data: np.ndarray) -> None:
        """Keep the memory behind ``data`` (or the array it views) for a later :meth:`zeros`."""
        owner = data if data.base is None else data.base
        if not isinstance(owner, np.ndarray) or owner.dtype != np.float32 or not owner.flags.c_contiguous:
            return
        with self._lock:
            if len(self._flats) < self._size and not any(np.shares_memory(owner, b) for b in self._flats):
                self._flats.append(owner.reshape(-1))
