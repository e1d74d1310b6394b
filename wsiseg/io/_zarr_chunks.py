"""Whole zarr chunks stored as files beside zarr's write path: the one place wsiseg does so.

Why not zarr's public API: ``array[region] = data`` for one chunk costs ~3 ms of zarr's machinery
(event-loop round trips, selection and codec-pipeline set-up), more than compressing the chunk; and zarr's
local store writes a chunk file in place, so a run killed during a write leaves a truncated chunk that a
resumed run cannot tell from a whole one. Here each chunk file appears whole or not at all
(:mod:`wsiseg.io.atomic`).

What this relies on is the zarr storage format, not zarr-python's internals: the chunk keys of the two
encodings :class:`~wsiseg.io.omezarr.SegmentationWriter` creates its arrays with (zarr v2 with ``/`` as
dimension separator: ``"0/1/2"``; zarr v3 ``default`` encoding with ``/``: ``"c/0/1/2"``), C-order chunks
padded with the fill value to the full chunk shape, and Blosc frames (a v2 Blosc compressor and v3's
``bytes`` + ``blosc`` chain store the same bytes). Local directory stores only.
``tests/io/test_zarr_chunks.py`` pins it for the installed zarr (:data:`SUPPORTED`): chunks stored here
read back through zarr's public API, and chunks zarr writes land at the paths computed here, for v2 and v3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: zarr-python releases this is tested with: ``[first, last)`` as (major, minor)
SUPPORTED: tuple[tuple[int, int], tuple[int, int]] = ((3, 0), (3, 2))


def chunk_key(zarr_format: int, coords: tuple[int, ...]) -> str:
    """The store key of chunk ``coords`` (chunk indices per dimension) of an array of ``zarr_format`` 2
    (``/`` separator) or 3 (``default`` encoding, ``/`` separator)."""
    key = "/".join(str(int(c)) for c in coords)
    return key if zarr_format == 2 else f"c/{key}"


def chunk_file(store_root: Path, array: Any, zarr_format: int, coords: tuple[int, ...]) -> Path:
    """The file holding chunk ``coords`` of ``array`` (a zarr array of the local store at ``store_root``)."""
    return Path(store_root) / str(array.path) / chunk_key(zarr_format, coords)


def chunk_shape(array: Any) -> tuple[int, ...]:
    """The full shape of ``array``'s chunks (edge chunks are stored padded to it)."""
    return tuple(int(n) for n in array.chunks)
