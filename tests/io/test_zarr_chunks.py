"""Chunks stored beside zarr's write path (wsiseg.io._zarr_chunks), pinned to the installed zarr: what we
store, zarr reads; what zarr writes lies where we look; both zarr formats the writer uses."""

from __future__ import annotations

from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr

from wsiseg.io import _zarr_chunks
from wsiseg.io.atomic import write_bytes
from wsiseg.io.omezarr import NgffVersion, SegmentationWriter, open_segmentation

CODEC = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_the_installed_zarr_is_supported() -> None:
    """A new zarr release fails here first: run these tests against it, then widen SUPPORTED."""
    first, last = _zarr_chunks.SUPPORTED
    assert first <= _release(zarr.__version__) < last, (zarr.__version__, _zarr_chunks.SUPPORTED)


@pytest.mark.parametrize("version", list(NgffVersion))
def test_chunk_paths_and_bytes_are_zarrs(version: NgffVersion, tmp_path: Path) -> None:
    writer = SegmentationWriter(tmp_path / "s.zarr", width=300, height=200, mpp=1.0,
                                classes=_classes(), chunk_size=128, version=version)
    array = writer._probs[0]  # (k, 200, 300), chunks (k, 128, 128)
    fmt = version.zarr_format
    assert _zarr_chunks.chunk_shape(array) == (3, 128, 128)
    # zarr writes a chunk: it lies at our path
    data = np.arange(3 * 128 * 128, dtype=np.uint8).reshape(3, 128, 128)
    array[:, 0:128, 128:256] = data
    assert _zarr_chunks.chunk_file(writer.path, array, fmt, (0, 0, 1)).is_file()
    assert _zarr_chunks.chunk_key(fmt, (0, 0, 1)) == ("0/0/1" if fmt == 2 else "c/0/0/1")
    # we store an edge chunk (padded to the full shape): zarr reads what we meant
    edge = np.full((3, 72, 44), 7, np.uint8)
    full = np.zeros((3, 128, 128), np.uint8)
    full[:, :72, :44] = edge
    target = _zarr_chunks.chunk_file(writer.path, array, fmt, (0, 1, 2))
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(target, CODEC.encode(full))
    reopened = zarr.open_array(str(writer.path / "0"), mode="r")
    np.testing.assert_array_equal(reopened[:, 0:128, 128:256], data)
    np.testing.assert_array_equal(reopened[:, 128:200, 256:300], edge)


def _classes() -> object:
    from wsiseg.classes import ClassList

    return ClassList.from_names(["a", "b", "c"])


@pytest.mark.parametrize("version", list(NgffVersion))
def test_the_writer_round_trips_through_zarr(version: NgffVersion, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(200, 300)).transpose(2, 0, 1).astype(np.float32)
    writer = SegmentationWriter(tmp_path / "s.zarr", width=300, height=200, mpp=1.0,
                                classes=_classes(), chunk_size=128, version=version)
    for y0 in range(0, 200, 128):
        for x0 in range(0, 300, 128):
            box = (y0, min(y0 + 128, 200), x0, min(x0 + 128, 300))
            writer.write_chunk(box, probs[:, box[0]:box[1], box[2]:box[3]])
    from wsiseg.io.output_metadata import OutputMetadata, SlideRecord

    writer.write_metadata(OutputMetadata(SlideRecord((0.5, 0.5)), writer.classes, 1.0))
    seg = open_segmentation(writer.path)
    stored = np.asarray(seg.probs[0][...])
    assert np.abs(stored.astype(int) - np.rint(probs * 255).astype(int)).max() <= 1
    np.testing.assert_array_equal(np.asarray(seg.labels[0][...]), probs.argmax(axis=0) + 1)
