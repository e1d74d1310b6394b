"""``segment --geojson DIR --objects CLASS``: objects and their table beside each slide's GeoJSON, counts
and densities in summary.csv, equal to the connected regions of the written labels; reruns keep them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from skimage.measure import label as components

from wsiseg.cli import main
from wsiseg.infer import open_segmentation
from wsiseg.synthetic import SYNTHETIC_CLASSES, write_synthetic_slide

from .test_infer_cli import _cli

FIRST = SYNTHETIC_CLASSES.names[0]  # the null model's uniform probabilities make it every tissue pixel's


def test_segment_folder_with_objects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    write_synthetic_slide(slides / "a.tiff", 768, 512, mpp=0.5, seed=3)
    write_synthetic_slide(slides / "b.tiff", 512, 512, mpp=0.5, seed=4)
    out, gj = tmp_path / "outs", tmp_path / "geojson"
    args = ["segment", str(slides), "--model", "null", "--mpp", "2", "--tile-size", "64", "--out", str(out),
            "--geojson", str(gj), "--objects", FIRST, "--quiet", "--qc", "off"]
    code, _, err = _cli(args, capsys)
    assert code == 0, err
    with open(out / "summary.csv", newline="") as f:
        rows = {r["slide"]: r for r in csv.DictReader(f)}
    for stem in ("a", "b"):
        labels = np.asarray(open_segmentation(out / f"{stem}.zarr").labels[0])
        expected = int(components(labels == 1, connectivity=1).max())
        with open(gj / f"{stem}.objects.csv", newline="") as f:
            table = list(csv.DictReader(f))
        assert len(table) == expected > 0 and {r["class"] for r in table} == {FIRST}
        assert (gj / f"{stem}.objects.geojson").is_file() and (gj / f"{stem}.geojson").is_file()
        row = rows[f"{stem}.tiff"]
        assert int(row[f"objects_{FIRST}"]) == expected
        assert float(row[f"objects_{FIRST}_per_mm2"]) == pytest.approx(expected / float(row["analysed_mm2"]),
                                                                        rel=1e-5)
    before = (gj / "a.objects.csv").stat().st_mtime_ns
    code, stdout, err = _cli(args, capsys)  # rerun: skipped slides keep their objects and their counts
    assert code == 0 and "2 skipped" in stdout, err
    assert (gj / "a.objects.csv").stat().st_mtime_ns == before
    with open(out / "summary.csv", newline="") as f:
        assert {r["slide"]: r[f"objects_{FIRST}"] for r in csv.DictReader(f)} == {
            k: v[f"objects_{FIRST}"] for k, v in rows.items()}


def test_objects_need_geojson(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_synthetic_slide(tmp_path / "a.tiff", 256, 256, mpp=0.5, seed=3)
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(tmp_path / "a.tiff"), "--model", "null", "--mpp", "2", "--tile-size", "64",
              "--out", str(tmp_path / "a.zarr"), "--objects", FIRST])
    assert exc.value.code != 0 and "--objects needs --geojson" in capsys.readouterr().err


def test_unknown_object_class_fails_before_segmenting(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    write_synthetic_slide(tmp_path / "a.tiff", 256, 256, mpp=0.5, seed=3)
    code, _, err = _cli(["segment", str(tmp_path / "a.tiff"), "--model", "null", "--mpp", "2",
                         "--tile-size", "64", "--out", str(tmp_path / "a.zarr"),
                         "--geojson", str(tmp_path / "a.geojson"), "--objects", "glands", "--quiet"], capsys)
    assert code != 0 and "no class 'glands' to export as objects" in err
    assert not (tmp_path / "a.zarr").exists()
