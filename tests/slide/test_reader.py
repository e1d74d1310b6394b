"""Slide reading: metadata, level choice, region reads at several mpp, white outside, threads, plain files."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image

from wsiseg.errors import MissingMppError, SlideError
from wsiseg.slide import open_slide
from wsiseg.synthetic import SlideLayout, SyntheticTruth, write_synthetic_slide


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    h, w = image.shape[0] // factor, image.shape[1] // factor
    blocks = image[:h * factor, :w * factor].reshape(h, factor, w, factor, 3)
    return blocks.astype(np.float64).mean(axis=(1, 3))


# -- the real CMU slide --------------------------------------------------------------------------------
def test_cmu_metadata(cmu_small_region: Path) -> None:
    with open_slide(cmu_small_region) as slide:
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx((0.499, 0.499))
        assert slide.level_count == 1
        assert slide.vendor == "aperio"
        assert slide.objective_power == 20.0
        assert slide.associated_images == ["label", "macro", "thumbnail"]
        label = slide.associated_image("label")
        assert label.shape == (463, 387, 3) and label.dtype == np.uint8
        assert slide.size_at(1.0) == (1108, 1481)  # ceil(2220 * 0.499), ceil(2967 * 0.499)
        with pytest.raises(SlideError, match="no associated image 'nope'"):
            slide.associated_image("nope")


@pytest.mark.parametrize("mpp", [0.5, 1.0, 2.0])
def test_cmu_region_sizes_and_content(cmu_small_region: Path, mpp: float) -> None:
    x0, y0, side_t = 900, 1800, 256
    with open_slide(cmu_small_region) as slide:
        region = slide.read_region(x0, y0, side_t, side_t, mpp)
    assert region.shape == (side_t, side_t, 3) and region.dtype == np.uint8 and region.flags.c_contiguous
    # Reference: OpenSlide's level-0 pixels of the same area (side_t * mpp / 0.499 level-0 px), box-resized.
    side0 = side_t * mpp / 0.499
    native = openslide.OpenSlide(str(cmu_small_region))
    raw = native.read_region((x0, y0), 0, (int(side0) + 2, int(side0) + 2))
    expected = np.asarray(raw.convert("RGB").resize((side_t, side_t), Image.Resampling.BOX,
                                                      box=(0, 0, side0, side0)))
    assert np.abs(region.astype(np.int16) - expected).max() <= 1
    mean = region.reshape(-1, 3).mean(axis=0)
    # H&E: red and blue above green, not glass-white, not black
    assert mean[0] > mean[1] + 20 and mean[2] > mean[1] + 20, mean
    assert 90 < mean.mean() < 225, mean


def test_cmu_coarse_read_equals_downsampled_fine_read(cmu_small_region: Path) -> None:
    with open_slide(cmu_small_region) as slide:
        fine = slide.read_region(600, 1200, 1024, 1024, 0.499)  # native: no resize
        native = openslide.OpenSlide(str(cmu_small_region))
        raw = np.asarray(native.read_region((600, 1200), 0, (1024, 1024)).convert("RGB"))
        np.testing.assert_array_equal(fine, raw)
        coarse = slide.read_region(600, 1200, 256, 256, 0.499 * 4)
        diff = np.abs(coarse.astype(np.float64) - _block_mean(fine, 4))
        assert diff.mean() < 0.6 and diff.max() <= 1.0  # box filter == 4x4 mean up to rounding
        # non-integer factors: the read at 2.0 um/px equals the read at 0.5 um/px reduced 4x
        at_05 = slide.read_region(600, 1200, 1024, 1024, 0.5)
        at_2 = slide.read_region(600, 1200, 256, 256, 2.0)
        diff = np.abs(at_2.astype(np.float64) - _block_mean(at_05, 4))
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4.0


def test_cmu_thumbnail_and_read_outside_is_white(cmu_small_region: Path) -> None:
    with open_slide(cmu_small_region) as slide:
        thumb = slide.thumbnail(8.0)
        assert thumb.shape == (186, 139, 3)  # ceil(2967 * .499 / 8), ceil(2220 * .499 / 8)
        edge = slide.read_region(2220 - 100, 2967 - 100, 200, 200, 0.499)
        assert (edge[100:, :] == 255).all() and (edge[:, 100:] == 255).all()
        assert edge[:100, :100].mean() < 250
        outside = slide.read_region(-5000, -5000, 64, 64, 2.0)
        assert (outside == 255).all()


def test_cmu_concurrent_reads_equal_sequential(cmu_small_region: Path) -> None:
    with open_slide(cmu_small_region) as slide:
        spots = [(x, y, mpp) for x in (0, 700, 1500) for y in (0, 1100, 2300) for mpp in (0.499, 1.3)]
        sequential = [slide.read_region(x, y, 300, 300, m) for x, y, m in spots]
        with ThreadPoolExecutor(4) as pool:
            concurrent = list(pool.map(lambda s: slide.read_region(s[0], s[1], 300, 300, s[2]), spots * 3))
        for i, region in enumerate(concurrent):
            np.testing.assert_array_equal(region, sequential[i % len(spots)])


def test_mpp_override_rescales_geometry(cmu_small_region: Path) -> None:
    with open_slide(cmu_small_region, mpp=0.25) as slide:
        assert slide.mpp == (0.25, 0.25)
        assert slide.size_at(0.5) == (1110, 1484)


# -- synthetic slides round-trip through OpenSlide -------------------------------------------------------
@pytest.mark.parametrize(("fixture", "vendor", "levels"),
                         [("synthetic_svs", "aperio", 2), ("synthetic_tiff", "generic-tiff", 3)])
def test_synthetic_round_trip(fixture: str, vendor: str, levels: int, request: pytest.FixtureRequest) -> None:
    truth: SyntheticTruth = request.getfixturevalue(fixture)
    native = openslide.OpenSlide(str(truth.path))
    assert native.properties["openslide.vendor"] == vendor
    assert native.level_count == levels
    assert float(native.properties["openslide.mpp-x"]) == pytest.approx(truth.mpp)
    with open_slide(truth.path) as slide:
        assert slide.vendor == vendor
        assert slide.dimensions == (truth.width0, truth.height0)
        assert slide.mpp == pytest.approx((truth.mpp, truth.mpp))
        assert slide.level_downsamples == pytest.approx(truth.level_downsamples, rel=1e-3)
        # Pixels of each class (away from borders) have that class's palette colour on average.
        region = slide.read_region(0, 0, truth.width0, truth.height0, truth.mpp)
        labels = truth.labels()
        for c in np.unique(labels):
            mean = region[labels == c].reshape(-1, 3).astype(np.float64).mean(axis=0)
            np.testing.assert_allclose(mean, truth.palette[c], atol=6)


def test_synthetic_svs_associated_images(synthetic_svs: SyntheticTruth) -> None:
    with open_slide(synthetic_svs.path) as slide:
        assert slide.associated_images == ["label", "thumbnail"]
        assert slide.objective_power == 20.0
        assert slide.associated_image("label").shape == (96, 96, 3)


def test_level_choice_and_cross_level_consistency(synthetic_tiff: SyntheticTruth) -> None:
    with open_slide(synthetic_tiff.path) as slide:
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0), rel=2e-3)
        assert [slide.best_level(m) for m in (0.1, 0.25, 0.3, 0.5, 0.9, 1.0, 8.0)] == [0, 0, 0, 1, 1, 2, 2]
        # 1.0 um/px comes from level 2 (a stored 4x box reduction) and matches the 4x mean of level 0.
        fine = slide.read_region(400, 200, 800, 800, 0.25)
        coarse = slide.read_region(400, 200, 200, 200, 1.0)
        diff = np.abs(coarse.astype(np.float64) - _block_mean(fine, 4))
        assert diff.mean() < 5.0  # JPEG-compressed twice (levels 0 and 2) but the same content
        local = np.abs(_block_mean(coarse, 8) - _block_mean(_block_mean(fine, 4).astype(np.uint8), 8))
        assert local.mean() < 1.5
        # A non-integer factor (0.25 -> 0.6 um/px) reads from level 1 and resizes.
        odd = slide.read_region(400, 200, 300, 300, 0.6)
        assert odd.shape == (300, 300, 3)
        ref = np.asarray(Image.fromarray(fine).resize((333, 333), Image.Resampling.BOX))[:300, :300]
        assert np.abs(odd.astype(np.float64) - ref).mean() < 6.0


# -- plain images and metadata ---------------------------------------------------------------------------
def test_plain_png_needs_mpp_and_reads_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    path = tmp_path / "tile.png"
    Image.fromarray(pixels).save(path)
    with pytest.raises(MissingMppError, match="`slide_mpp`"):
        open_slide(path)
    with open_slide(path, mpp=0.62) as slide:
        assert slide.vendor == "image" and slide.level_count == 1 and slide.dimensions == (400, 300)
        np.testing.assert_array_equal(slide.read_region(0, 0, 400, 300, 0.62), pixels)
        padded = slide.read_region(350, 250, 100, 100, 0.62)
        np.testing.assert_array_equal(padded[:50, :50], pixels[250:, 350:])
        assert (padded[50:] == 255).all() and (padded[:, 50:] == 255).all()
        half = slide.read_region(0, 0, 200, 150, 1.24)
        np.testing.assert_allclose(half, _block_mean(pixels, 2), atol=1.0)


def test_read_finer_than_level0_interpolates(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:60, 0:80]
    ramp = np.stack([xx * 3, yy * 4, np.full_like(xx, 100)], axis=-1).astype(np.uint8)
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    with open_slide(path, mpp=1.0) as slide:
        double = slide.read_region(10, 10, 80, 60, 0.5)  # 40 x 30 source pixels enlarged 2x
    assert double.shape == (60, 80, 3)
    # target pixel j samples source coordinate 10 + (j + 0.5) / 2 - 0.5 of a linear ramp
    j = np.arange(80)
    expected_r = 3 * (10 + (j + 0.5) / 2 - 0.5)
    # the margin read around the region makes the interpolation exact up to the region's own edges
    np.testing.assert_allclose(double[..., 0], np.broadcast_to(expected_r, (60, 80)), atol=1.0)
    assert (double[..., 2] == 100).all()


def test_plain_png_with_plausible_dpi_and_rgba(tmp_path: Path) -> None:
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top opaque red, bottom transparent -> white
    path = tmp_path / "scan.png"
    Image.fromarray(rgba).save(path, dpi=(25400 / 0.5, 25400 / 0.5))
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx((0.5, 0.5), rel=1e-3)
        region = slide.read_region(0, 0, 10, 10, slide.mpp[0])
        assert (region[:5] == (200, 0, 0)).all() and (region[5:] == 255).all()
    Image.fromarray(rgba).save(path, dpi=(72, 72))  # a screen default, not a microscope resolution
    with pytest.raises(MissingMppError):
        open_slide(path)


def test_tiff_without_resolution_needs_mpp(tmp_path: Path) -> None:
    truth = write_synthetic_slide(tmp_path / "nompp.tiff", 600, 500, layout=SlideLayout.TIFF,
                                  record_mpp=False)
    with pytest.raises(MissingMppError, match="`slide_mpp`"):
        open_slide(truth.path)
    with open_slide(truth.path, mpp=0.5) as slide:
        assert slide.vendor == "generic-tiff" and slide.mpp == (0.5, 0.5)


def test_bad_files_raise_slide_error(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="not found"):
        open_slide(tmp_path / "missing.svs")
    text = tmp_path / "notes.svs"
    text.write_text("not a slide\n")
    with pytest.raises(SlideError, match="not a slide format"):
        open_slide(text)
    fake_png = tmp_path / "fake.png"
    fake_png.write_text("not a png\n")
    with pytest.raises(SlideError, match="cannot read"):
        open_slide(fake_png, mpp=0.5)
    with pytest.raises(SlideError, match="positive"):
        open_slide(fake_png, mpp=-1)


def test_truncated_slide_fails_cleanly(synthetic_svs: SyntheticTruth, tmp_path: Path) -> None:
    data = synthetic_svs.path.read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match="TIFF file that OpenSlide cannot open; it is probably truncated"):
        open_slide(cut)
    (tmp_path / "empty.svs").write_bytes(b"")
    with pytest.raises(SlideError, match="empty"):
        open_slide(tmp_path / "empty.svs")


def test_corrupt_tiles_fail_when_read(tmp_path: Path) -> None:
    truth = write_synthetic_slide(tmp_path / "ok.svs", 1024, 1024, layout=SlideLayout.SVS)
    data = bytearray(truth.path.read_bytes())
    n = len(data)
    data[n // 4:n // 2] = b"\xff" * (n // 2 - n // 4)  # level-0 tile data, not the directories
    bad = tmp_path / "bad.svs"
    bad.write_bytes(bytes(data))
    # the directories are intact, so it opens; reading the damaged tiles fails cleanly
    damaged = r"at level 0, \(\d+, \d+\): the slide is damaged there"
    with open_slide(bad) as slide, pytest.raises(SlideError, match=damaged):
        slide.read_region(0, 0, 1024, 1024, 0.5)


def test_stripped_tiff_reads_by_region(tmp_path: Path) -> None:
    """A stripped (non-tiled) TIFF is not OpenSlide's; tifffile reads it region by region."""
    import tifffile

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (700, 900, 3), dtype=np.uint8)
    path = tmp_path / "stripped.tif"
    tifffile.imwrite(path, pixels, photometric="rgb", compression="zlib", rowsperstrip=32,
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    with open_slide(path) as slide:
        assert slide.vendor == "tiff" and slide.dimensions == (900, 700) and slide.mpp == (0.5, 0.5)
        region = slide.read_region(800, 600, 200, 150, 0.5)
        np.testing.assert_array_equal(region[:100, :100], pixels[600:, 800:])
        assert (region[100:] == 255).all() and (region[:, 100:] == 255).all()
        np.testing.assert_allclose(slide.read_region(0, 0, 450, 350, 1.0), _block_mean(pixels, 2), atol=1.0)
    grey16 = tmp_path / "grey16.tif"
    tifffile.imwrite(grey16, (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16))
    with pytest.raises(MissingMppError):
        open_slide(grey16)
    with open_slide(grey16, mpp=1.0) as slide:
        region = slide.read_region(0, 0, 64, 64, 1.0)
        assert region.shape == (64, 64, 3) and (region[..., 0] == region[..., 2]).all()
        assert region[0, 0, 0] == 0 and region[-1, -1, 0] == (4095 * 16) >> 8


def test_public_openslide_path_matches_fast_path(synthetic_svs: SyntheticTruth) -> None:
    """The portable path (OpenSlide's PIL RGBA + paste on white) gives the same pixels as the raw path."""
    with open_slide(synthetic_svs.path) as fast, open_slide(synthetic_svs.path) as portable:
        portable._backend._raw = False  # type: ignore[attr-defined]
        for x0, y0, mpp in [(0, 0, 0.5), (1900, 1400, 0.5), (-64, 100, 2.0), (300, 200, 1.3)]:
            np.testing.assert_array_equal(fast.read_region(x0, y0, 256, 256, mpp),
                                          portable.read_region(x0, y0, 256, 256, mpp))
        edge = fast.read_region(1900, 1400, 256, 256, 0.5)
        assert (edge[136:] == 255).all() and (edge[:, 148:] == 255).all() and edge[:136, :148].mean() < 250


def test_ome_tiff_subifd_pyramid_uses_its_levels_and_physical_size(tmp_path: Path) -> None:
    """QuPath/Bio-Formats OME-TIFFs keep levels in SubIFDs, which OpenSlide does not see."""
    import tifffile

    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    path = tmp_path / "export.ome.tif"
    levels = [pixels, pixels[::2, ::2].copy(), pixels[::4, ::4].copy()]
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(levels[0], subifds=2, tile=(128, 128), photometric="rgb", compression="zlib",
                  metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        for level in levels[1:]:
            tif.write(level, subfiletype=1, tile=(128, 128), photometric="rgb", compression="zlib")
    with open_slide(path) as slide:
        assert slide.mpp == (0.25, 0.25) and slide.level_count == 3
        assert slide.level_downsamples == (1.0, 2.0, 4.0)
        # a read at 1 um/px comes from the stored level 2, untouched
        np.testing.assert_array_equal(slide.read_region(0, 0, 200, 150, 1.0), levels[2])
        np.testing.assert_array_equal(slide.read_region(400, 200, 100, 100, 0.5), levels[1][100:200, 200:300])


@pytest.mark.parametrize(("x0", "y0", "mpp"), [
    (256, 512, 0.5),   # level 0's own pixels: decoded straight into ``out``
    (512, 256, 2.0),   # level 1 (downsample 4) at 2.0 um/px: a whole-pixel origin, also direct
    (0, 0, 1.0),       # a resize from level 0: computed, then copied into ``out``
    (1900, 1400, 0.5),  # partly outside the slide: white there
    (3, 5, 2.0),       # an origin between level-1 pixels: resampled
])
def test_read_into_out_equals_a_plain_read(synthetic_svs: SyntheticTruth, x0: int, y0: int,
                                           mpp: float) -> None:
    with open_slide(synthetic_svs.path) as slide:
        expected = slide.read_region(x0, y0, 200, 150, mpp)
        batch = np.zeros((3, 150, 200, 3), np.uint8)
        got = slide.read_region(x0, y0, 200, 150, mpp, out=batch[1])
        assert got is batch[1] or np.shares_memory(got, batch)
        np.testing.assert_array_equal(batch[1], expected)
        assert not batch[0].any() and not batch[2].any()  # the neighbouring slots are untouched
        with pytest.raises(ValueError, match="out must be"):
            slide.read_region(x0, y0, 200, 150, mpp, out=np.zeros((150, 200, 4), np.uint8))
