"""Tissue composition (per-class areas and shares) and the cohort table, against an independent count."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from wsiseg.cli import main
from wsiseg.export.composition import SUMMARY_FILE, composition, rebuild_summary
from wsiseg.infer import ColourModel, ModelSpec, open_segmentation, segment_slide, segment_slides
from wsiseg.synthetic import SYNTHETIC_CLASSES, SlideLayout, SyntheticTruth, write_synthetic_slide

SLIDE_MPP = 0.25
#: 0.75 um/px tiles, output stride 2: output pixels of 1.5 um = 6 level-0 pixels; neither side of the slide
#: is a multiple of 6, so the last output column and row reach past the slide
WIDTH0, HEIGHT0, F = 1810, 1294, 6


@pytest.fixture(scope="module")
def odd_slide(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruth:
    return write_synthetic_slide(tmp_path_factory.mktemp("odd") / "odd.tiff", WIDTH0, HEIGHT0, mpp=SLIDE_MPP,
                                 layout=SlideLayout.TIFF, seed=7)


@pytest.fixture(scope="module")
def odd_segmentation(odd_slide: SyntheticTruth, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = ColourModel(SYNTHETIC_CLASSES, odd_slide.palette, mpp=0.75, tile_size=128, output_stride=2)
    out = tmp_path_factory.mktemp("seg") / "odd.zarr"
    segment_slide(odd_slide.path, model, out, progress=False, preview=False)  # tissue detection on
    return out


def _independent_areas(seg_path: Path) -> np.ndarray:
    """um^2 per class: the labels blown up to level-0 pixels, cut to the slide, counted, times 0.25^2."""
    labels = np.asarray(open_segmentation(seg_path).labels[0][...])
    level0 = np.repeat(np.repeat(labels, F, axis=0), F, axis=1)[:HEIGHT0, :WIDTH0]
    counts = np.bincount(level0.ravel(), minlength=len(SYNTHETIC_CLASSES) + 1)
    return counts[1:] * SLIDE_MPP**2


def test_composition_equals_an_independent_count(odd_segmentation: Path) -> None:
    seg = open_segmentation(odd_segmentation)
    assert seg.labels[0].shape == (-(-HEIGHT0 // F), -(-WIDTH0 // F))  # rounded up past the slide
    labels = np.asarray(seg.labels[0][...])
    assert (labels[-1] > 0).any() and (labels[:, -1] > 0).any()  # the edge pixels are analysed
    assert (labels == 0).any() and len(np.unique(labels)) > 3  # not analysed background, several classes
    expected = _independent_areas(odd_segmentation)
    comp = composition(seg)
    assert comp.class_names == tuple(SYNTHETIC_CLASSES.names)
    np.testing.assert_allclose(comp.areas_um2, expected, rtol=1e-12)
    recorded = seg.metadata.composition  # what segment_slide wrote
    for i, name in enumerate(SYNTHETIC_CLASSES.names):
        entry = recorded["classes"][name]
        assert entry["area_um2"] == pytest.approx(expected[i], rel=1e-12)
        assert entry["area_mm2"] == pytest.approx(expected[i] / 1e6, rel=1e-12)
        assert entry["share"] == pytest.approx(expected[i] / expected.sum(), rel=1e-12)
    assert recorded["analysed_um2"] == pytest.approx(expected.sum(), rel=1e-12)
    assert expected.sum() <= WIDTH0 * HEIGHT0 * SLIDE_MPP**2


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_batch_writes_the_cohort_table_and_summary_rebuilds_it(odd_slide: SyntheticTruth, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "a.tiff").symlink_to(odd_slide.path)
    write_synthetic_slide(slides / "b.tiff", 700, 500, mpp=SLIDE_MPP, layout=SlideLayout.TIFF, seed=8)
    out = tmp_path / "outs"
    batch = segment_slides(sorted(slides.iterdir()), ModelSpec("null", mpp=1.0, tile_size=64), out,
                           single=False, progress=False, preview=False)
    assert batch.ok
    rows = _rows(out / SUMMARY_FILE)
    assert [r["slide"] for r in rows] == ["a.tiff", "b.tiff"] and {r["status"] for r in rows} == {"done"}
    for row in rows:
        expected = _independent_areas_any(out / (Path(row["slide"]).stem + ".zarr"))
        assert float(row["analysed_mm2"]) == pytest.approx(expected.sum() / 1e6, rel=1e-5)
        for i, name in enumerate(SYNTHETIC_CLASSES.names):
            assert float(row[f"{name}_mm2"]) == pytest.approx(expected[i] / 1e6, rel=1e-5, abs=1e-12)
            share = expected[i] / expected.sum()
            assert float(row[f"{name}_share"]) == pytest.approx(share, rel=1e-5, abs=1e-12)
        assert row["model"] and row["wsiseg_version"]
    written = (out / SUMMARY_FILE).read_text()

    (out / SUMMARY_FILE).unlink()
    main(["summary", str(out)])
    assert "2 slides" in capsys.readouterr().out
    assert (out / SUMMARY_FILE).read_text() == written  # same table (both runs were fresh: status done)

    (out / "c.zarr").mkdir()  # not a segmentation: listed, not fatal
    path, n_rows = rebuild_summary(out)
    rows = _rows(path)
    assert n_rows == 3 and rows[2]["slide"] == "c" and rows[2]["status"] == "unreadable" and rows[2]["error"]


def _independent_areas_any(seg_path: Path) -> np.ndarray:
    """As :func:`_independent_areas` for any output whose pixels are a whole number of level-0 pixels."""
    seg = open_segmentation(seg_path)
    f = round(seg.mpp[0] / seg.slide_mpp[0])
    width0, height0 = seg.metadata.slide.width0, seg.metadata.slide.height0
    labels = np.asarray(seg.labels[0][...])
    level0 = np.repeat(np.repeat(labels, f, axis=0), f, axis=1)[:height0, :width0]
    counts = np.bincount(level0.ravel(), minlength=len(seg.classes) + 1)
    return counts[1:] * seg.slide_mpp[0] ** 2


def test_summary_of_a_folder_without_segmentations_is_a_one_line_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["summary", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1 and "no segmentations" in err
