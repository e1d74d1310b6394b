"""The OME-Zarr writer/reader: values at every pyramid level, and metadata that validates and opens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from wsiseg.classes import ClassList
from wsiseg.errors import OutputError
from wsiseg.io.omezarr import NgffVersion, SegmentationWriter, open_segmentation
from wsiseg.io.output_metadata import OutputMetadata, SlideRecord

CLASSES = ClassList.from_names(["background", "tumour", "stroma"])


def _probs(rng: np.random.Generator, h: int, w: int, k: int = 3) -> np.ndarray:
    p = rng.dirichlet(np.ones(k) * 0.3, size=(h, w)).transpose(2, 0, 1).astype(np.float32)
    p[:, : h // 4, : w // 5] = 0.0  # a not-analysed corner
    return p


def _write(path: Path, version: NgffVersion, probs: np.ndarray, chunk: int = 64) -> SegmentationWriter:
    _, h, w = probs.shape
    writer = SegmentationWriter(path, width=w, height=h, mpp=0.5, classes=CLASSES, chunk_size=chunk,
                                version=version)
    for y0 in range(0, h, chunk):
        for x0 in range(0, w, chunk):
            box = (y0, min(y0 + chunk, h), x0, min(x0 + chunk, w))
            writer.write_chunk(box, probs[:, box[0]:box[1], box[2]:box[3]])
    writer.write_metadata(OutputMetadata(SlideRecord((0.25, 0.25)), CLASSES, 0.5, finished="now"))
    return writer


def _mean2(p: np.ndarray) -> np.ndarray:
    """Independent 2x block mean with edge replication (the documented downsampling)."""
    _, h, w = p.shape
    q = np.pad(p, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    return q.reshape(q.shape[0], q.shape[1] // 2, 2, q.shape[2] // 2, 2).mean(axis=(2, 4))


@pytest.mark.parametrize("version", list(NgffVersion))
def test_pyramid_values_roundtrip(version: NgffVersion, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probs = _probs(rng, 301, 517)  # odd sizes: partial edge chunks and odd halvings
    writer = _write(tmp_path / "s.zarr", version, probs, chunk=64)
    seg = open_segmentation(tmp_path / "s.zarr")
    assert seg.version is version and seg.n_levels == writer.n_levels == 3
    assert seg.classes.names == CLASSES.names and seg.finished
    assert seg.mpp == [0.5, 1.0, 2.0] and seg.downsample0(1) == (4.0, 4.0)
    expected = probs.astype(np.float64)
    for level in range(seg.n_levels):
        if level:
            expected = _mean2(expected)
        got = np.asarray(seg.probs[level][...])
        assert got.shape == expected.shape
        assert np.abs(got.astype(int) - np.rint(expected * 255)).max() <= 1
        labels = np.asarray(seg.labels[level][...])
        fraction = expected.sum(axis=0)  # analysed fraction of the area (ties at exactly 1/2 are excluded)
        analysed, not_analysed = fraction > 0.5 + 1e-3, fraction < 0.5 - 1e-3
        # where the argmax is not a near-tie it must match exactly
        top2 = np.sort(expected, axis=0)[-2:]
        clear = analysed & (top2[1] - top2[0] > 1e-4)
        assert (labels[clear] == expected.argmax(axis=0)[clear] + 1).all()
        assert (labels[not_analysed] == 0).all() and not_analysed.any()
    assert seg.level_for_mpp(0.9) == 1 and seg.level_for_mpp(100) == 2


@pytest.mark.parametrize("version", list(NgffVersion))
def test_metadata_validates_and_opens_in_ome_zarr(version: NgffVersion, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "s.zarr"
    _write(path, version, _probs(rng, 200, 300))
    if version is NgffVersion.V04:
        from ome_zarr_models.v04.image import Image
        from ome_zarr_models.v04.image_label import ImageLabel
    else:
        from ome_zarr_models.v05.image import Image  # type: ignore[assignment]
        from ome_zarr_models.v05.image_label import ImageLabel  # type: ignore[assignment]
    root = zarr.open_group(str(path), mode="r")
    image = Image.from_zarr(root)
    meta = image.ome_attributes if version is NgffVersion.V05 else image.attributes
    ms = meta.multiscales[0]
    assert [a.name for a in ms.axes] == ["c", "y", "x"]
    label = ImageLabel.from_zarr(root["labels/classes"])
    attrs = label.ome_attributes if version is NgffVersion.V05 else label.attributes
    colors = {c.label_value: list(c.rgba) for c in attrs.image_label.colors}
    assert colors[2] == [*CLASSES.colors[1], 255] and colors[0][3] == 0

    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    nodes = list(Reader(parse_url(str(path)))())
    assert len(nodes[0].data) == 2  # two pyramid levels of probabilities
    assert nodes[0].data[0].shape == (3, 200, 300)
    assert nodes[0].metadata["channel_names"] == CLASSES.names
    label_nodes = [n for n in nodes if n.load(Label)]
    assert len(label_nodes) == 1, "ome-zarr-py did not find the label image"
    assert label_nodes[0].data[0].shape == (200, 300)


def test_reader_rejects_non_segmentation(tmp_path: Path) -> None:
    zarr.open_group(str(tmp_path / "x.zarr"), mode="w", zarr_format=2)
    with pytest.raises(OutputError, match="not a wsiseg segmentation"):
        open_segmentation(tmp_path / "x.zarr")
    with pytest.raises(OutputError, match="does not exist"):
        open_segmentation(tmp_path / "missing.zarr")


def test_labels_are_first_argmax_and_zero_where_mostly_not_analysed() -> None:
    from wsiseg.io.omezarr import labels_from_probs

    rng = np.random.default_rng(5)
    for k in (1, 2, 5, 9):
        p = rng.integers(0, 4, size=(k, 61, 47)).astype(np.float32) / (2 * k)  # many ties, some sums < 0.5
        expected = np.where(p.sum(axis=0) < 0.5, 0, p.argmax(axis=0) + 1)  # argmax: first maximum wins
        assert np.array_equal(labels_from_probs(p), expected), k
        assert (expected == 0).any() and ((expected > 1).any() or k == 1)


@pytest.mark.parametrize("version", list(NgffVersion))
def test_stored_chunks_hold_exactly_the_quantised_pyramid(version: NgffVersion, tmp_path: Path) -> None:
    """Chunks are encoded and stored by wsiseg itself (whole chunks and read-modify-written pieces of coarse
    chunks, from several threads): zarr must read back exactly what quantise/labels give per level."""
    from concurrent.futures import ThreadPoolExecutor

    from wsiseg.io.omezarr import downsample2, labels_from_probs, quantise

    rng = np.random.default_rng(6)
    h, w, chunk = 650, 900, 256  # edge chunks on both axes; level 2 pieces (64) < MIN_CHUNK (128)
    probs = _probs(rng, h, w)
    writer = SegmentationWriter(tmp_path / "t.zarr", width=w, height=h, mpp=0.5, classes=CLASSES,
                                chunk_size=chunk, version=version)
    boxes = [(y, min(y + chunk, h), x, min(x + chunk, w))
             for y in range(0, h, chunk) for x in range(0, w, chunk)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda b: writer.write_chunk(b, probs[:, b[0]:b[1], b[2]:b[3]].copy()), boxes))
    writer.write_metadata(OutputMetadata(SlideRecord((0.25, 0.25)), CLASSES, 0.5, finished="now"))
    seg = open_segmentation(tmp_path / "t.zarr")
    assert seg.n_levels == 3
    for level in range(seg.n_levels):
        f = chunk >> level
        exp_q = np.zeros(seg.probs[level].shape, np.uint8)
        exp_l = np.zeros(seg.labels[level].shape, np.uint8)
        for y0, y1, x0, x1 in boxes:  # each level-0 chunk downsampled on its own, as documented
            p = probs[:, y0:y1, x0:x1]
            for _ in range(level):
                p = downsample2(p)
            ly, lx = y0 // chunk * f, x0 // chunk * f
            exp_q[:, ly:ly + p.shape[1], lx:lx + p.shape[2]] = quantise(p)
            exp_l[ly:ly + p.shape[1], lx:lx + p.shape[2]] = labels_from_probs(p)
        assert np.array_equal(np.asarray(seg.probs[level][...]), exp_q), level
        assert np.array_equal(np.asarray(seg.labels[level][...]), exp_l), level
