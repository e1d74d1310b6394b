"""The one use of openslide-python's internals: a region as OpenSlide's raw premultiplied ARGB words.

Why not the public API: ``OpenSlide.read_region`` hands back a PIL RGBA image, so every region is copied
three times (the C library's buffer, un-premultiplied into a PIL image, composited on white into a third
buffer). Reading the C buffer straight into a numpy array and compositing it once
(:func:`wsiseg.slide._backends.premultiplied_bgra_on_white`) costs about 2/3 of the public path for
1024 px tiles of CMU-1 (``benchmarks/bench_slide.py``), and reading is what the null-model throughput
target is measured against. The pixels are the same: ``tests/slide/test_openslide_raw.py`` compares
both paths pixel for pixel, transparent borders included.

The adapter relies on ``openslide.lowlevel._read_region(osr, buf, x, y, level, w, h)`` and
``OpenSlide._osr``, unchanged from openslide-python 1.2 through 1.4. :func:`available` is False outside
:data:`SUPPORTED` (a release newer than those tested), on big-endian machines (the words' byte order) and
whenever either name is missing; the reader then uses the public API.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

import numpy as np
import openslide
from openslide import lowlevel

#: openslide-python releases this adapter is tested with: ``[first, last)`` as (major, minor)
SUPPORTED: tuple[tuple[int, int], tuple[int, int]] = ((1, 2), (1, 5))


def _release(version: str) -> tuple[int, int]:
    major, minor = (int("".join(ch for ch in part if ch.isdigit()) or 0) for part in version.split(".")[:2])
    return major, minor


def supported_release(version: str | None = None) -> bool:
    """Whether openslide-python ``version`` (default: the installed one) is one :data:`SUPPORTED`."""
    release = _release(version if version is not None else str(openslide.__version__))
    return SUPPORTED[0] <= release < SUPPORTED[1]


def available(handle: openslide.OpenSlide) -> bool:
    """Whether :func:`read_argb` can read through ``handle`` (else use ``handle.read_region``)."""
    return (sys.byteorder == "little" and supported_release() and hasattr(lowlevel, "_read_region")
            and hasattr(handle, "_osr"))


def read_argb(handle: Any, buf: np.ndarray, x0: int, y0: int, level: int) -> None:
    """Read the region at level-0 pixel ``(x0, y0)`` of ``level`` into ``buf`` (``(h, w, 4)`` uint8,
    C-contiguous): premultiplied ARGB words, bytes B, G, R, A on little-endian machines. Raises
    ``openslide.OpenSlideError`` as the public API does."""
    height, width = buf.shape[:2]
    lowlevel._read_region(handle._osr, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), x0, y0, level,
                          width, height)
