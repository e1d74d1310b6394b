"""A slide with a tile that cannot be decoded: the slide still finishes, the tile is "not analysed",
named in a warning and in the output's metadata; resume keeps the list; ``fail`` keeps the old behaviour."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.infer.conftest import CountingModel, SyntheticSlide
from wsiseg.errors import SlideError
from wsiseg.infer import ColourModel, ReadErrorPolicy, open_segmentation, segment_slide
from wsiseg.slide import open_slide
from wsiseg.synthetic import SYNTHETIC_CLASSES

#: The damaged TIFF tile of level 0: tile 1 of the first row, level-0 pixels x 512..1024, y 0..512.
DAMAGED_X, DAMAGED_Y, DAMAGED_SIDE = 512, 0, 512
#: 256 px tiles at level 0 without overlap: the four grid tiles inside the damaged TIFF tile
EXPECTED = [(2, 0), (3, 0), (2, 1), (3, 1)]  # (col, row) in grid order
KWARGS = {"mpp": 0.5, "tile_size": 256, "overlap": 0, "tissue": False, "batch_size": 2, "progress": False,
          "checkpoint_s": 0.0}


@pytest.fixture(scope="module")
def damaged_slide(synthetic_slide: SyntheticSlide, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the synthetic slide whose level-0 JPEG tile 1 is overwritten with zeros."""
    path = tmp_path_factory.mktemp("damaged") / "damaged.svs"
    shutil.copy(synthetic_slide.path, path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.tilewidth == DAMAGED_SIDE  # the layout this test is written for
        offset, size = page.dataoffsets[1], page.databytecounts[1]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\0" * size)
    return path


def _oracle(synthetic_slide: SyntheticSlide) -> ColourModel:
    return ColourModel(SYNTHETIC_CLASSES, synthetic_slide.truth.palette, mpp=0.5, tile_size=256)


def _labels(path: Path) -> np.ndarray:
    return np.asarray(open_segmentation(path).labels[0][...])


def test_damaged_tile_is_not_analysed_and_listed(synthetic_slide: SyntheticSlide, damaged_slide: Path,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _oracle(synthetic_slide)
    intact = segment_slide(synthetic_slide.path, model, tmp_path / "intact.zarr", preview=False, **KWARGS)
    result = segment_slide(damaged_slide, model, tmp_path / "damaged.zarr", **KWARGS)  # preview on
    assert result.n_unreadable == len(EXPECTED) and result.n_tiles == intact.n_tiles
    assert f"{len(EXPECTED)} unreadable tiles not analysed" in result.summary()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("wsiseg: warning")]
    assert len(warnings) == len(EXPECTED)
    assert all("damaged.svs" in w and "not analysed" in w for w in warnings)

    attrs = open_segmentation(tmp_path / "damaged.zarr").metadata.to_json()
    listed = attrs["unreadable_tiles"]
    assert listed["count"] == len(EXPECTED)
    assert [(t["col"], t["row"]) for t in listed["tiles"]] == EXPECTED
    assert all("damaged there" in t["error"] for t in listed["tiles"])

    damaged, reference = _labels(tmp_path / "damaged.zarr"), _labels(tmp_path / "intact.zarr")
    box = (slice(DAMAGED_Y, DAMAGED_Y + DAMAGED_SIDE), slice(DAMAGED_X, DAMAGED_X + DAMAGED_SIDE))
    assert (damaged[box] == 0).all()  # output level 0 = level-0 pixels here (0.5 um/px, stride 1)
    outside = np.ones(damaged.shape, bool)
    outside[box] = False
    assert (damaged[outside] > 0).all() and np.array_equal(damaged[outside], reference[outside])
    assert result.preview is not None and result.preview.is_file()  # the thumbnail survives the damage
    # the composition counts analysed area only: the damaged 512 x 512 px are missing from it
    analysed = attrs["composition"]["analysed_um2"]
    assert analysed == pytest.approx((2048 * 1536 - DAMAGED_SIDE ** 2) * 0.25)


def test_damaged_tile_resume_keeps_the_list(synthetic_slide: SyntheticSlide, damaged_slide: Path,
                                            tmp_path: Path) -> None:
    model = _oracle(synthetic_slide)
    whole = tmp_path / "whole.zarr"
    segment_slide(damaged_slide, model, whole, preview=False, **KWARGS)
    out = tmp_path / "crash.zarr"
    crashing = CountingModel(model, fail_on=5)  # batches of 2: tiles 0..7 stitched, the damaged ones too
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_slide(damaged_slide, crashing, out, preview=False, **KWARGS)
    resumed = CountingModel(model)
    result = segment_slide(damaged_slide, resumed, out, preview=False, **KWARGS)
    assert result.resumed and resumed.tiles == result.n_tiles - 8
    assert result.n_unreadable == len(EXPECTED)
    listed = open_segmentation(out).metadata.to_json()["unreadable_tiles"]
    assert listed == open_segmentation(whole).metadata.to_json()["unreadable_tiles"]
    assert np.array_equal(_labels(out), _labels(whole))


def test_on_read_error_fail_fails_the_slide(synthetic_slide: SyntheticSlide, damaged_slide: Path,
                                            tmp_path: Path) -> None:
    where = r"damaged\.svs at level 0, \((512|768), (0|256)\): the slide is damaged there"
    with pytest.raises(SlideError, match=where):
        segment_slide(damaged_slide, _oracle(synthetic_slide), tmp_path / "fail.zarr", preview=False,
                      on_read_error=ReadErrorPolicy.FAIL, **KWARGS)


def test_reader_recovers_after_a_damaged_region(damaged_slide: Path) -> None:
    """OpenSlide's handle goes into an error state at the first failed read; the reader reopens it."""
    with open_slide(damaged_slide) as slide:
        with pytest.raises(SlideError, match="damaged there"):
            slide.read_region(600, 0, 64, 64, 0.5)
        assert slide.read_region(0, 0, 64, 64, 0.5).std() > 0  # still readable elsewhere
        thumb = slide.thumbnail(1.0)  # a level-0 read in blocks: only the damaged piece is white
        assert (thumb[:256, 256:512] == 255).all() and (thumb[:256, :256] < 250).any()
