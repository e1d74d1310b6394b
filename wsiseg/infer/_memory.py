"""Keep the process's resident memory close to what it really holds.

Whole-slide inference allocates and frees many short-lived arrays of 1-25 MB from several threads. glibc's
malloc raises its mmap threshold after such frees, so later blocks come from per-thread heaps that are not
returned to the OS: resident memory then creeps to 2-3x the live data, and varies from run to run. Fixing
the mmap threshold (blocks >= 1 MiB always get their own mapping, unmapped on free), a low trim threshold
and two arenas keep peak RSS flat and reproducible. No-op outside glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_done = False


def tame_malloc(mmap_threshold: int = 1 << 20, trim_threshold: int = 64 << 10, arena_max: int = 2) -> bool:
    """Set glibc's mmap/trim thresholds once per process; returns whether they were set."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok_mmap = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    ok_arena = bool(mallopt(_M_ARENA_MAX, arena_max))
    _done = ok_mmap and ok_arena and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _done
