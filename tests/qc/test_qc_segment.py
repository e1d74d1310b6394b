"""QC inside `wsiseg segment` and the `wsiseg qc` / `info` / `export --labels qc` commands (issue 22):
artifact pixels are not analysed (default), reported but analysed (report) or not looked for (off);
labels/qc is an NGFF label image; areas, summary.csv, the preview and resume carry it; reviewed
artifacts come back through `segment --mask`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from PIL import Image
from shapely.geometry import box, mapping

from tests.export.qupath_rules import checked_geometry
from tests.export.test_export_geojson import validate_qupath
from wsiseg.cli import main
from wsiseg.io.omezarr import open_segmentation
from wsiseg.qc import QCLabel
from wsiseg.slide import open_slide
from wsiseg.synthetic.artifacts import INK_COLOURS, blur_region, composite, ink_od, stroke_density
from wsiseg.synthetic.slides import write_synthetic_slide

MPP = 0.5  # the image's um/px
SIDE = 2048


@pytest.fixture(scope="module")
def inked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A synthetic H&E-like image (2048 px at 0.5 um/px) with a green pen stroke and a blurred disk, as a
    PNG 'slide', with the truth of both."""
    tmp = tmp_path_factory.mktemp("inked")
    write_synthetic_slide(tmp / "synthetic.svs", SIDE, SIDE, seed=11)
    with open_slide(tmp / "synthetic.svs") as slide:
        rgb = slide.read_region(0, 0, SIDE, SIDE, MPP)
    rng = np.random.default_rng(4)
    density = stroke_density(rgb.shape[:2], MPP, rng, width_um=180.0, edge_um=10.0, n_points=3)
    od = ink_od(density, INK_COLOURS["green"], rng)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    disk = (yy - 1400) ** 2 + (xx - 500) ** 2 < 300**2
    image = blur_region(composite(rgb, od), disk & (od.sum(-1) < 0.02), 6.0)
    path = tmp / "inked.png"
    Image.fromarray(image).save(path)
    return {"path": path, "ink": od.sum(-1) >= 0.15, "disk": disk, "tmp": tmp}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def segment(inked: dict[str, Any], out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> Any:
    code, _, err = run(["segment", str(inked["path"]), "--slide-mpp", str(MPP), "--model", "null",
                        "--mpp", "1", "--tile-size", "256", "--out", str(out), "--quiet", *extra], capsys)
    assert code == 0, err
    return open_segmentation(out)


def at_output(mask: np.ndarray, seg: Any) -> np.ndarray:
    """A 0.5 um/px truth on the output grid (share >= 0.5 of the output pixel)."""
    factor = round(seg.mpp[0] / MPP)
    h, w = (s // factor for s in mask.shape)
    return np.asarray(mask[:h * factor, :w * factor].reshape(h, factor, w, factor).mean(axis=(1, 3)) >= 0.5)


def test_default_mode_leaves_artifacts_out(inked: dict[str, Any], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    seg = segment(inked, tmp_path / "s.zarr", capsys)
    labels = np.asarray(seg.labels[0][...])
    probs = np.asarray(seg.probs[0][...])
    qc_levels, values = seg.label_image("qc")
    qc = np.asarray(qc_levels[0][...])
    assert qc.shape == labels.shape and len(qc_levels) == seg.n_levels
    assert {v.name: v.value for v in values} == {label.title: int(label) for label in QCLabel}
    ink, disk = at_output(inked["ink"], seg), at_output(inked["disk"], seg)
    h, w = qc.shape
    ink, disk = ink[:h, :w], disk[:h, :w]
    pen, blur = qc == QCLabel.PEN, qc == QCLabel.BLUR
    assert (pen & ink).sum() / ink.sum() >= 0.9 and (pen & ~ink).sum() / (~ink).sum() < 0.05  # the stroke
    # blur only in the blurred disk (how much of it is found on real tissue: test_qc_detection)
    assert blur.sum() > 50 and (blur & disk).sum() / blur.sum() >= 0.9
    artifacts = pen | blur
    assert (labels[artifacts] == 0).all() and (probs[:, artifacts] == 0).all()  # not analysed
    assert (labels[qc == QCLabel.TISSUE] > 0).mean() > 0.99  # the rest is
    record = seg.metadata.qc
    assert record["mode"] == "default" and record["excluded"] is True
    areas = record["areas"]["labels"]
    px_um2 = seg.mpp[0] ** 2
    assert areas["pen"]["area_um2"] == pytest.approx(pen.sum() * px_um2, rel=0.01)
    assert record["blur"]["blocks_blurred"] > 0
    analysed = seg.metadata.composition["analysed_um2"]  # class areas count only what was analysed
    assert analysed == pytest.approx((labels > 0).sum() * px_um2, rel=0.01)


def test_labels_qc_is_an_ngff_label_image(inked: dict[str, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.zarr"
    segment(inked, out, capsys)
    root = zarr.open_group(str(out), mode="r")
    assert root["labels"].attrs["labels"] == ["classes", "qc"]
    attrs = dict(root["labels/qc"].attrs)
    classes = dict(root["labels/classes"].attrs)
    assert attrs["multiscales"][0]["datasets"] == classes["multiscales"][0]["datasets"]
    image_label = attrs["image-label"]
    assert image_label["version"] == "0.4" and image_label["source"] == {"image": "../../"}
    assert [c["label-value"] for c in image_label["colors"]] == [int(label) for label in QCLabel]
    assert all(len(c["rgba"]) == 4 for c in image_label["colors"])
    for level in range(len(attrs["multiscales"][0]["datasets"])):
        assert root[f"labels/qc/{level}"].dtype == np.uint8
        assert root[f"labels/qc/{level}"].shape == root[f"labels/classes/{level}"].shape


def test_report_mode_analyses_everything_and_off_looks_for_nothing(
        inked: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = segment(inked, tmp_path / "r.zarr", capsys, "--qc", "report")
    qc = np.asarray(report.label_image("qc")[0][0][...])
    labels = np.asarray(report.labels[0][...])
    assert (qc == QCLabel.PEN).sum() > 0 and (labels[qc == QCLabel.PEN] > 0).all()
    assert report.metadata.qc["mode"] == "report" and report.metadata.qc["excluded"] is False
    off = segment(inked, tmp_path / "o.zarr", capsys, "--qc", "off")
    assert "qc" not in off.label_images and off.metadata.qc is None
    assert off.metadata.params["qc"] == "off"


def test_resume_keeps_the_blurred_blocks(inked: dict[str, Any], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped half way resumes to the arrays of an uninterrupted run: blurred blocks measured before
    the stop come back from the journal (those tiles are not read again)."""
    whole = segment(inked, tmp_path / "whole.zarr", capsys)
    from wsiseg.infer import run as run_module

    original = run_module.SegmentationRun._predict
    calls = {"n": 0}

    def failing(self: Any, model: Any, tiles: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, model, tiles)

    monkeypatch.setattr(run_module.SegmentationRun, "_predict", failing)
    code, _, _ = run(["segment", str(inked["path"]), "--slide-mpp", str(MPP), "--model", "null", "--mpp", "1",
                      "--tile-size", "256", "--out", str(tmp_path / "cut.zarr"), "--quiet"], capsys)
    assert code == 130
    monkeypatch.setattr(run_module.SegmentationRun, "_predict", original)
    read: list[int] = []
    measure = run_module.RunQC.measure

    def counting(self: Any, tile: Any, pixels: np.ndarray) -> None:
        read.append(tile.index)
        measure(self, tile, pixels)

    monkeypatch.setattr(run_module.RunQC, "measure", counting)
    resumed = segment(inked, tmp_path / "cut.zarr", capsys)
    assert resumed.metadata.resumed and 0 < len(read) < whole.metadata.tiles_analysed
    for name in ("labels", "probs"):
        for a, b in zip(getattr(whole, name), getattr(resumed, name), strict=True):
            assert np.array_equal(np.asarray(a[...]), np.asarray(b[...]))
    qc_a, qc_b = (np.asarray(s.label_image("qc")[0][0][...]) for s in (whole, resumed))
    assert np.array_equal(qc_a, qc_b)


def test_reviewed_artifacts_come_back_through_mask(inked: dict[str, Any], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """export --labels qc -> edit in "QuPath" (drop the blur, draw a fold) -> segment --mask: exactly the
    reviewed artifacts are left out, nothing is detected again."""
    first = tmp_path / "first.zarr"
    detected = np.asarray(segment(inked, first, capsys).label_image("qc")[0][0][...]) == QCLabel.PEN
    artifacts = tmp_path / "artifacts.geojson"
    code, _, err = run(["export", str(first), "--geojson", str(artifacts), "--labels", "qc"], capsys)
    assert code == 0, err
    data = json.loads(artifacts.read_text())
    validate_qupath(data)
    names = {f["properties"]["classification"]["name"] for f in data["features"]}
    assert names == {"Artifact: pen", "Artifact: blur"}
    for feature in data["features"]:
        checked_geometry(feature)
    kept = [f for f in data["features"] if f["properties"]["classification"]["name"] == "Artifact: pen"]
    fold = box(1400, 200, 1800, 500)  # level-0 pixels: a reviewer's own artifact
    kept.append({"type": "Feature", "geometry": mapping(fold),
                 "properties": {"objectType": "annotation", "classification": {"name": "Artifact: fold",
                                                                               "color": [200, 40, 160]}}})
    reviewed = tmp_path / "reviewed.geojson"
    reviewed.write_text(json.dumps({"type": "FeatureCollection", "features": kept}))
    seg = segment(inked, tmp_path / "second.zarr", capsys, "--mask", str(reviewed))
    qc = np.asarray(seg.label_image("qc")[0][0][...])
    labels = np.asarray(seg.labels[0][...])
    assert seg.metadata.qc["reviewed"] == str(reviewed) and seg.metadata.qc["blur"] is None
    assert not (qc == QCLabel.BLUR).any()  # dropped by the reviewer, not detected again
    out_mpp = seg.mpp[0]
    y0, y1 = int(200 * MPP / out_mpp) + 1, int(500 * MPP / out_mpp) - 1
    x0, x1 = int(1400 * MPP / out_mpp) + 1, int(1800 * MPP / out_mpp) - 1
    assert (qc[y0:y1, x0:x1] == QCLabel.OTHER).all() and (labels[y0:y1, x0:x1] == 0).all()
    pen = qc == QCLabel.PEN  # the reviewed pen: the detected one, drawn back at the ROI raster's resolution
    assert (pen & detected).sum() / (pen | detected).sum() >= 0.85


def test_folder_run_summary_has_excluded_areas(inked: dict[str, Any], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "a.png").write_bytes(inked["path"].read_bytes())
    code, _, err = run(["segment", str(slides), "--slide-mpp", str(MPP), "--model", "null", "--mpp", "1",
                        "--tile-size", "256", "--out", str(tmp_path / "out"), "--quiet",
                        "--geojson", str(tmp_path / "gj")], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "out/summary.csv").open()))
    assert rows[0]["qc"] == "default" and float(rows[0]["excluded_pen_mm2"]) > 0
    assert float(rows[0]["excluded_blur_mm2"]) > 0
    seg = open_segmentation(tmp_path / "out/a.zarr")
    assert float(rows[0]["excluded_pen_mm2"]) == pytest.approx(
        seg.metadata.qc["areas"]["labels"]["pen"]["area_um2"] / 1e6, rel=1e-4)
    assert (tmp_path / "gj/a.geojson").is_file() and (tmp_path / "gj/a.qc.geojson").is_file()
    preview = np.asarray(Image.open(tmp_path / "out/a.preview.png").convert("RGB"))
    assert (np.abs(preview.astype(int) - QCLabel.PEN.rgba[:3]).sum(axis=-1) == 0).sum() > 100  # hatching


def test_qc_command(inked: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["qc", str(inked["path"]), "--slide-mpp", str(MPP), "--out", str(tmp_path / "qc"),
                          "--blur-mpp", "1", "--tile-size", "512", "--quiet"], capsys)
    assert code == 0, err
    assert "inked.png: tissue" in out and "pen" in out and "blur" in out
    meta = json.loads((tmp_path / "qc/inked.qc-labels.json").read_text())
    labels = np.asarray(Image.open(tmp_path / "qc/inked.qc-labels.png"))
    assert meta["labels"] == {str(int(label)): label.title for label in QCLabel}
    assert set(np.unique(labels)) <= {int(label) for label in QCLabel}
    assert labels.shape == (round(SIDE * MPP / meta["mpp"]), round(SIDE * MPP / meta["mpp"]))
    assert (labels == QCLabel.PEN).any() and (labels == QCLabel.BLUR).any()
    rows = list(csv.DictReader((tmp_path / "qc/qc.csv").open()))
    assert rows[0]["slide"] == "inked.png"
    assert float(rows[0]["pen_mm2"]) > 0 and float(rows[0]["blur_mm2"]) > 0
    data = json.loads((tmp_path / "qc/inked.qc.geojson").read_text())
    validate_qupath(data)
    assert (tmp_path / "qc/inked.qc.png").is_file()
    code, out, _ = run(["qc", str(inked["path"]), "--slide-mpp", str(MPP), "--out", str(tmp_path / "quick"),
                        "--no-blur", "--quiet"], capsys)
    assert code == 0 and "blur" not in out.split("excluded")[1]


def test_info_reports_tissue_after_qc(inked: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["info", str(inked["path"]), "--slide-mpp", str(MPP), "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert 0 < info["tissue_fraction"] < info["tissue_detected"] and info["qc"]["pen"] > 0.02


class _Killed(BaseException):
    """A kill -9 stand-in raised inside the run's last steps."""


def test_a_run_killed_while_rewriting_labels_qc_resumes(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed once after labels/qc was written (journal still there), then again half-way through rewriting
    it (its group deleted, still listed): the next run finishes and equals an uninterrupted one."""
    from wsiseg.infer import PatternModel, RunStatus, segment_slide
    from wsiseg.infer.quality import RunQC
    from wsiseg.io.omezarr import SegmentationWriter
    from wsiseg.synthetic import SYNTHETIC_CLASSES

    slide = write_synthetic_slide(tmp_path / "s.svs", 1400, 1100, mpp=0.5, seed=1).path

    def model() -> PatternModel:
        return PatternModel(SYNTHETIC_CLASSES, mpp=2.0, tile_size=128)

    want = segment_slide(slide, model(), tmp_path / "want.zarr", progress=False)
    out = tmp_path / "o.zarr"
    write = RunQC.write

    def write_then_die(self: RunQC, *args: Any) -> Any:
        write(self, *args)
        raise _Killed

    monkeypatch.setattr(RunQC, "write", write_then_die)
    with pytest.raises(_Killed):
        segment_slide(slide, model(), out, progress=False)
    monkeypatch.setattr(RunQC, "write", write)

    def delete_then_die(self: SegmentationWriter, name: str, *args: Any) -> None:
        del self._root["labels"][name]
        raise _Killed

    monkeypatch.setattr(SegmentationWriter, "write_label_image", delete_then_die)
    with pytest.raises(_Killed):
        segment_slide(slide, model(), out, progress=False)
    monkeypatch.undo()

    resumed = segment_slide(slide, model(), out, progress=False)
    assert resumed.status is RunStatus.RESUMED
    got, ref = open_segmentation(out), open_segmentation(want.out)
    np.testing.assert_array_equal(np.asarray(got.labels[0][...]), np.asarray(ref.labels[0][...]))
    np.testing.assert_array_equal(np.asarray(zarr.open_group(out, mode="r")["labels/qc/0"][...]),
                                  np.asarray(zarr.open_group(want.out, mode="r")["labels/qc/0"][...]))
