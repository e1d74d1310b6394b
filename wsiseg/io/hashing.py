"""The sha256 of a file: the one checksum of weights files (provenance, the registry, slim checkpoints)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

_CACHE: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()
_CHUNK = 1 << 22  # bytes read at a time (4 MiB)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, cached within the process per (resolved path, size, mtime).

    A file rewritten in place gets a new mtime (and usually size), so the cache never answers for old
    bytes. Raises OSError when the file cannot be read.
    """
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        known = _CACHE.get(key)
    if known is not None:
        return known
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _LOCK:
        _CACHE[key] = digest
    return digest
