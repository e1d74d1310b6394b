"""Synthetic slides: exact truth, labels across resolutions, separable class colours, file layout, memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from wsiseg.slide import open_slide
from wsiseg.synthetic import SYNTHETIC_CLASSES, SlideLayout, SyntheticTruth, write_synthetic_slide
from wsiseg.synthetic.slides import _textures


def test_classes() -> None:
    assert SYNTHETIC_CLASSES.names == ["background", "stroma", "tumour", "necrosis", "inflammatory"]


def test_labels_are_exactly_what_was_rendered(synthetic_svs: SyntheticTruth) -> None:
    labels = synthetic_svs.labels()
    assert labels.shape == (synthetic_svs.height0, synthetic_svs.width0) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(5))  # every class present
    textures = _textures(synthetic_svs.mpp)
    x0, y0, w, h = 700, 300, 900, 1100  # spans a texture period boundary (1024) and several blocks
    pixels = synthetic_svs.render(x0, y0, w, h)
    ys, xs = np.mgrid[y0:y0 + h, x0:x0 + w]
    expected = textures[labels[y0:y0 + h, x0:x0 + w], ys % 1024, xs % 1024]
    np.testing.assert_array_equal(pixels, expected)
    # block-independent: the labels of any sub-region equal the slice of the whole map
    np.testing.assert_array_equal(synthetic_svs.labels_region(x0, y0, w, h, synthetic_svs.mpp),
                                  labels[y0:y0 + h, x0:x0 + w])


def test_labels_at_coarser_resolution_sample_level0(synthetic_svs: SyntheticTruth) -> None:
    fine = synthetic_svs.labels()
    for mpp in (1.0, 2.0, 1.3):
        coarse = synthetic_svs.labels(mpp)
        s = mpp / synthetic_svs.mpp
        with open_slide(synthetic_svs.path) as slide:
            assert coarse.shape[::-1] == slide.size_at(mpp)
        rows = np.minimum(np.floor((np.arange(coarse.shape[0]) + 0.5) * s).astype(int), fine.shape[0] - 1)
        cols = np.minimum(np.floor((np.arange(coarse.shape[1]) + 0.5) * s).astype(int), fine.shape[1] - 1)
        inside = (np.floor((np.arange(coarse.shape[0]) + 0.5) * s) < fine.shape[0])[:, None] & \
                 (np.floor((np.arange(coarse.shape[1]) + 0.5) * s) < fine.shape[1])[None, :]
        np.testing.assert_array_equal(coarse[inside], fine[np.ix_(rows, cols)][inside])


def test_seed_determines_labels(tmp_path: Path, synthetic_svs: SyntheticTruth) -> None:
    again = write_synthetic_slide(tmp_path / "again.tiff", 2048, 1536, layout=SlideLayout.TIFF, seed=1)
    np.testing.assert_array_equal(again.labels(2.0), synthetic_svs.labels(2.0))
    other = write_synthetic_slide(tmp_path / "other.tiff", 2048, 1536, layout=SlideLayout.TIFF, seed=7)
    assert (other.labels(2.0) != synthetic_svs.labels(2.0)).mean() > 0.3


def test_regions_are_large_blobs(synthetic_svs: SyntheticTruth) -> None:
    """Each class forms regions larger than a 256-pixel tile at 0.5 um/px (128 um), i.e. hundreds of um."""
    labels = synthetic_svs.labels(4.0)  # 4 um/px
    for c in range(5):
        comp, n = ndimage.label(labels == c)
        assert n > 0
        areas_um2 = np.bincount(comp.ravel())[1:] * 16.0
        assert areas_um2.max() > 150 * 150, (c, areas_um2.max())
    # and borders are smooth: boundary pixels are a small fraction at 4 um/px
    edges = (labels[1:, :] != labels[:-1, :]).mean() + (labels[:, 1:] != labels[:, :-1]).mean()
    assert edges < 0.1


@pytest.mark.parametrize("read_mpp", [0.5, 1.0, 2.0])
def test_nearest_palette_oracle_recovers_labels(synthetic_svs: SyntheticTruth, read_mpp: float) -> None:
    """A 15x15 box blur at the read resolution + nearest class mean gives the truth away from borders."""
    with open_slide(synthetic_svs.path) as slide:
        w, h = slide.size_at(read_mpp)
        image = slide.read_region(0, 0, w, h, read_mpp).astype(np.float32)
    blurred = ndimage.uniform_filter(image, size=(15, 15, 1), mode="reflect")
    palette = synthetic_svs.palette
    assert palette.shape == (5, 3)
    pred = np.argmin([((blurred - colour) ** 2).sum(axis=-1) for colour in palette], axis=0)
    truth = synthetic_svs.labels(read_mpp)
    interior = np.zeros(truth.shape, bool)
    for c in range(5):
        interior |= ndimage.binary_erosion(truth == c, np.ones((17, 17)), border_value=1)
    assert interior.mean() > 0.7
    accuracy = (pred == truth)[interior].mean()
    assert accuracy > 0.999, accuracy
    # the class means are far apart (min pairwise distance in RGB)
    d = np.sqrt(((palette[:, None] - palette[None]) ** 2).sum(-1)) + np.eye(5) * 1e9
    assert d.min() > 40


def test_file_layouts(synthetic_svs: SyntheticTruth, synthetic_tiff: SyntheticTruth) -> None:
    with tifffile.TiffFile(synthetic_svs.path) as tif:
        first = tif.pages[0]
        assert first.is_tiled and first.compression == tifffile.COMPRESSION.JPEG
        assert first.description.startswith("Aperio Image Library")
        assert "|MPP = 0.5" in first.description and "|AppMag = 20" in first.description
        assert not tif.pages[1].is_tiled  # the thumbnail, where Aperio puts it
    with tifffile.TiffFile(synthetic_tiff.path) as tif:
        tiled = [p for p in tif.pages if p.is_tiled]
        assert [p.shape[:2] for p in tiled] == [(1300, 1800), (650, 900), (325, 450)]
        assert all(p.compression == tifffile.COMPRESSION.JPEG for p in tiled)
        assert tiled[0].get_resolution() == pytest.approx((1e4 / 0.25, 1e4 / 0.25))
        assert tiled[0].resolutionunit == tifffile.RESUNIT.CENTIMETER


def test_generation_streams(tmp_path: Path) -> None:
    """A 4096x4096 slide (48 MiB of RGB) is written with far less Python-heap memory than that."""
    write_synthetic_slide(tmp_path / "warm.svs", 600, 600)  # textures cached, imports done
    tracemalloc.start()
    write_synthetic_slide(tmp_path / "big.svs", 4096, 4096, layout=SlideLayout.SVS)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 * 2**20, peak / 2**20  # measured: 7.4 MiB at 4096 and at 8192
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".wsiseg-synth-")]  # temp files gone
