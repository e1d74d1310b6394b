"""Files that appear whole or not at all: write beside the target, then rename over it.

A reader (or a run killed half way) sees either the old file or the complete new one, never a torn one:
``os.replace`` is atomic within a file system. Used for every file wsiseg writes that something else
reads back: checkpoints, journals, resume states, zarr chunks, previews, caches, the registry.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path


def _tmp_name(path: Path) -> Path:
    """A hidden sibling unique to this process and thread (several writers never share a temp file)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path`` (``fsync``: flushed to
    the disk first), on an exception it is removed and the exception propagates (``OSError`` included:
    callers turn it into their own one-line error)."""
    target = Path(path)
    tmp = _tmp_name(target)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes | memoryview, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`replacing`)."""
    with replacing(path, fsync=fsync) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = False) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`replacing`)."""
    write_bytes(path, text.encode("utf-8"), fsync=fsync)
