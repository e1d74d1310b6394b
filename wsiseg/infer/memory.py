"""Keep the process's resident memory close to what it really holds, without page-fault churn (opt-in).

Whole-slide inference allocates and frees many short-lived arrays of 1-25 MB from several threads. With
glibc's defaults, malloc creates up to 8 arenas per core and moves its mmap threshold as blocks are freed,
so resident memory creeps to 2-3x the live data and varies from run to run. Giving every block >= 1 MiB
its own mapping fixes that but costs ~2,800 page faults (~11 ms of CPU) per 1024 px tile, as each tile's
buffers are mapped, zeroed by the kernel and unmapped again. So: two arenas, a fixed mmap threshold of
32 MiB (tile-sized buffers are reused from the heap) and a trim threshold of 64 MiB (freed memory returns
to the OS only in large runs). Peak RSS then follows the live data and stays flat; no-op outside glibc.

These are settings of the whole process, so the library never makes them by itself: the ``wsiseg segment``
command does, once, at its start (``WSISEG_MALLOC_TUNING=0`` turns that off); a program or notebook that
segments many slides may call :func:`tame_malloc` itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_done = False


#: Environment variable: ``0`` keeps glibc's defaults in ``wsiseg segment``.
OPT_OUT = "WSISEG_MALLOC_TUNING"


def tame_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20, arena_max: int = 2) -> bool:
    """Set glibc's mmap/trim thresholds and arena count for this process (once; later calls do nothing);
    returns whether they are set. Not glibc (macOS, Windows, musl): nothing happens, False."""
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
