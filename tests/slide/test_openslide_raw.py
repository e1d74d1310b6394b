"""The OpenSlide fast path (wsiseg.slide._openslide_raw), pinned to the installed openslide-python: the
raw premultiplied words, composited on white, are the public ``read_region``'s pixels, everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image

from wsiseg.slide import _openslide_raw, open_slide
from wsiseg.slide._backends import premultiplied_bgra_on_white
from wsiseg.synthetic.slides import SyntheticTruth


def _public(handle: openslide.OpenSlide, x0: int, y0: int, level: int, w: int, h: int) -> np.ndarray:
    region = handle.read_region((x0, y0), level, (w, h))
    white = Image.new("RGB", region.size, (255, 255, 255))
    white.paste(region, mask=region.getchannel("A"))
    return np.asarray(white)


def test_the_installed_openslide_python_is_supported() -> None:
    """A new openslide-python release fails here first: check the adapter against it, then widen
    SUPPORTED (until then the reader takes the public path, correct but slower)."""
    assert _openslide_raw.supported_release(), (openslide.__version__, _openslide_raw.SUPPORTED)
    assert not _openslide_raw.supported_release("1.1.2") and not _openslide_raw.supported_release("2.0.0")


@pytest.mark.parametrize("level", [0, 1])
def test_raw_equals_public_read_region(synthetic_svs: SyntheticTruth, level: int) -> None:
    handle = openslide.OpenSlide(str(synthetic_svs.path))
    assert _openslide_raw.available(handle)
    w, h = handle.level_dimensions[level]
    down = round(handle.level_downsamples[level])
    # inside, across the right/bottom edges (transparent beyond: white), and wholly outside
    for x, y, rw, rh in ((64, 96, 300, 200), (w - 150, h - 100, 300, 200), (w + 10, 0, 64, 64)):
        buf = np.empty((rh, rw, 4), np.uint8)
        _openslide_raw.read_argb(handle, buf, x * down, y * down, level)
        ours = premultiplied_bgra_on_white(buf)
        np.testing.assert_array_equal(ours, _public(handle, x * down, y * down, level, rw, rh))


def test_the_reader_gives_the_same_pixels_on_either_path(synthetic_svs: SyntheticTruth) -> None:
    with open_slide(synthetic_svs.path) as fast, open_slide(synthetic_svs.path) as public:
        public._backend._raw = False  # type: ignore[attr-defined]
        for mpp in (fast.mpp[0], fast.mpp[0] * 2, fast.mpp[0] * 3):
            np.testing.assert_array_equal(fast.read_region(100, 50, 256, 200, mpp),
                                          public.read_region(100, 50, 256, 200, mpp))


def test_cmu_raw_equals_public(cmu_small_region: Path) -> None:
    handle = openslide.OpenSlide(str(cmu_small_region))
    buf = np.empty((512, 512, 4), np.uint8)
    _openslide_raw.read_argb(handle, buf, 1000, 1500, 0)
    np.testing.assert_array_equal(premultiplied_bgra_on_white(buf), _public(handle, 1000, 1500, 0, 512, 512))
