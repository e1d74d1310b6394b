"""``wsiseg segment`` from the command line, a real checkpoint end to end, and the real CMU slide."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wsiseg.cli import main
from wsiseg.infer import open_segmentation, preview_path
from wsiseg.slide import open_slide
from wsiseg.synthetic import SYNTHETIC_CLASSES, write_synthetic_slide

from .conftest import SyntheticSlide


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-contained tiny SAM-Path checkpoint (random weights, real layout): 5 classes, 2 um/px, 128 px."""
    import torch

    from wsiseg.model.checkpoint import save_checkpoint
    from wsiseg.model.sam_path import ModelConfig, SamPath

    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = SamPath(ModelConfig.from_preset("tiny", len(SYNTHETIC_CLASSES), input_size=64))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.wsiseg"
    return save_checkpoint(model, path, classes=SYNTHETIC_CLASSES, mpp=2.0, tile_size=128,
                           self_contained=True)


def test_null_model_run_then_skip_then_overwrite(synthetic_slide: SyntheticSlide, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.zarr"
    args = ["segment", str(synthetic_slide.path), "--model", "null", "--mpp", "2", "--tile-size", "128",
            "--out", str(out), "--quiet", "--no-tissue"]
    code, stdout, err = _cli(args, capsys)
    assert code == 0, err
    assert "1 slide: 1 done, 0 resumed, 0 skipped (finished), 0 failed" in stdout and err == ""
    seg = open_segmentation(out)
    # the null model's output grid is 4x coarser than its 2 um/px tiles, like SAM-Path's
    assert seg.labels[0].shape == (96, 128) and seg.mpp[0] == 8.0 and seg.finished
    before = open_segmentation(out).metadata.to_json()
    code, stdout, err = _cli([a for a in args if a != "--quiet"], capsys)  # a rerun: skipped, success
    assert code == 0 and err.strip() == f"{synthetic_slide.path.name}: skipped (finished) -> {out}", err
    assert "1 slide: 0 done, 0 resumed, 1 skipped (finished), 0 failed" in stdout
    assert open_segmentation(out).metadata.to_json() == before  # untouched
    code, stdout, err = _cli([*args, "--overwrite"], capsys)
    assert code == 0 and "1 slide: 1 done" in stdout, err
    assert open_segmentation(out).metadata.run_id != before["run_id"]
    code, _, err = _cli([*args, "--overwrite", "--output-mpp", "2"], capsys)  # the tiles' own resolution
    assert code == 0, err
    seg = open_segmentation(out)
    assert seg.labels[0].shape == (384, 512) and seg.mpp[0] == 2.0 and seg.metadata.analysis_mpp == 2.0


def test_directory_with_a_bad_slide_continues(synthetic_slide: SyntheticSlide, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "a.svs").symlink_to(synthetic_slide.path)
    write_synthetic_slide(slides / "b.tiff", 512, 512, mpp=0.5, seed=5)
    (slides / "c_corrupt.svs").write_bytes(b"not a slide at all")
    out = tmp_path / "outs"
    code, stdout, err = _cli(["segment", str(slides), "--model", "null", "--mpp", "4", "--tile-size", "64",
                              "--out", str(out), "--quiet"], capsys)
    assert code == 1
    assert (out / "a.zarr").is_dir() and (out / "b.zarr").is_dir() and not (out / "c_corrupt.zarr").exists()
    assert preview_path(out / "a.zarr").is_file()
    error_lines = [line for line in err.splitlines() if line.startswith("wsiseg: error")]
    assert len(error_lines) == 1 and "c_corrupt.svs" in error_lines[0]
    assert "3 slides: 2 done, 0 resumed, 0 skipped (finished), 1 failed" in stdout
    assert "failed: c_corrupt.svs" in stdout
    rows = (out / "summary.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["a.svs", "done"], ["b.tiff", "done"],
                                                    ["c_corrupt.svs", "failed"]]
    code, stdout, err = _cli(["segment", str(slides), "--model", "null", "--mpp", "4", "--tile-size", "64",
                              "--out", str(out), "--quiet"], capsys)  # the rerun skips the finished ones
    assert code == 1 and "3 slides: 0 done, 0 resumed, 2 skipped (finished), 1 failed" in stdout
    rows = (out / "summary.csv").read_text().splitlines()
    assert [r.split(",")[1] for r in rows[1:]] == ["skipped", "skipped", "failed"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--model", "null"], "the null model needs --mpp and --tile-size"),
    (["--model", "{tmp}/garbage.wsiseg"], "garbage.wsiseg"),
    (["--model", "null", "--mpp", "2", "--tile-size", "128", "--overlap", "99"], "--overlap"),
    (["--model", "null", "--mpp", "2", "--tile-size", "128", "--output-mpp", "3"], "whole multiple of --mpp"),
    (["--model", "null", "--mpp", "2", "--tile-size", "128", "--overlap", "18"], "must divide"),
])
def test_one_line_errors(synthetic_slide: SyntheticSlide, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         extra: list[str], message: str) -> None:
    (tmp_path / "garbage.wsiseg").write_bytes(b"\x00garbage")
    extra = [e.format(tmp=tmp_path) for e in extra]
    code, _, err = _cli(["segment", str(synthetic_slide.path), "--out", str(tmp_path / "o.zarr"), *extra],
                        capsys)
    assert code != 0 and message in err and err.startswith("wsiseg: error:") and err.count("\n") == 1


def test_geojson_roi_mask(synthetic_slide: SyntheticSlide, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    roi = tmp_path / "roi.geojson"  # left 40% of the 2048 x 1536 level-0 slide
    roi.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"objectType": "annotation"},
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [819, 0], [819, 1536], [0, 1536], [0, 0]]]},
    }]}))
    out = tmp_path / "roi.zarr"
    code, _, err = _cli(["segment", str(synthetic_slide.path), "--model", "null", "--mpp", "2", "--tile-size",
                         "64", "--overlap", "0", "--mask", str(roi), "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    labels = np.asarray(open_segmentation(out).labels[0][...])
    # 819 level-0 px = 204.75 px at 2 um/px: tiles (64 px, no overlap) up to x = 256 are analysed, i.e.
    # output pixels up to 64 on the null model's 4x coarser output grid
    assert (labels[:, :64] > 0).all() and (labels[:, 64:] == 0).all()


def _interior_check(seg_path: Path, slide_path: Path, model: object, tile: int, overlap: int) -> None:
    """Pixels of a tile covered by no other tile must be the model's own prediction for that tile.

    ``tile`` and ``overlap`` are pixels at the analysis resolution; the output grid may be coarser."""
    seg = open_segmentation(seg_path)
    mpp = seg.metadata.analysis_mpp
    f = round(seg.mpp[0] / mpp)  # analysis pixels per output pixel
    tile_o, overlap_o = tile // f, overlap // f
    probs = np.asarray(seg.probs[0][...])
    analysed = np.asarray(seg.labels[0][...]) > 0
    stride = tile_o - overlap_o
    with open_slide(slide_path) as slide:
        checked = 0
        for row in range(probs.shape[1] // stride):
            for col in range(probs.shape[2] // stride):
                y, x = row * stride, col * stride
                lo, hi = overlap_o, tile_o - overlap_o
                inner = (slice(y + lo, y + hi), slice(x + lo, x + hi))
                if y + tile_o > probs.shape[1] or x + tile_o > probs.shape[2] or not analysed[inner].all():
                    continue
                x0, y0 = round(x * f * mpp / slide.mpp[0]), round(y * f * mpp / slide.mpp[1])
                tile_img = slide.read_region(x0, y0, tile, tile, mpp)[None]
                expected = model.predict(tile_img, tile_o)[0]  # type: ignore[attr-defined]
                exp = np.rint(expected[:, lo:hi, lo:hi] * 255)
                assert np.abs(probs[(slice(None), *inner)].astype(int) - exp).max() <= 1
                checked += 1
    assert checked >= 2


def test_tiny_checkpoint_end_to_end_with_geojson(synthetic_slide: SyntheticSlide, tiny_checkpoint: Path,
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wsiseg.model import load_model

    out, gj = tmp_path / "t.zarr", tmp_path / "t.geojson"
    code, _, err = _cli(["segment", str(synthetic_slide.path), "--model", str(tiny_checkpoint),
                         "--out", str(out), "--device", "cpu", "--geojson", str(gj), "--quiet",
                         "--no-tissue", "--ngff-version", "0.5"], capsys)
    assert code == 0, err
    seg = open_segmentation(out)
    # tiny: 64 px model input for 128 px tiles, logits 16 x 16 per tile: an output grid of 8 x 2 um/px
    assert seg.version.value == "0.5" and seg.mpp[0] == 16.0 and seg.labels[0].shape == (48, 64)
    assert seg.metadata.model["checkpoint"]["file"] == "tiny.wsiseg"
    assert seg.metadata.params["tile_size"] == 128 and seg.metadata.params["overlap"] == 16
    data = json.loads(gj.read_text())
    assert data["type"] == "FeatureCollection" and data["features"]
    model = load_model(tiny_checkpoint, device="cpu")
    _interior_check(out, synthetic_slide.path, model, 128, 16)


@pytest.mark.shared
def test_cmu_small_region_end_to_end(cmu_small_region: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from wsiseg.infer import segment_slide
    from wsiseg.model import load_model

    model = load_model(tiny_checkpoint, device="cpu")
    out = tmp_path / "cmu.zarr"
    res = segment_slide(cmu_small_region, model, out, progress=False, batch_size=4)
    with open_slide(cmu_small_region) as slide:
        w2, h2 = slide.size_at(2.0)
        assert (res.width, res.height) == (-(-w2 // 8), -(-h2 // 8)) and res.output_mpp == 16.0
    assert 0 < res.n_tiles <= res.n_tiles_total
    seg = open_segmentation(out)
    labels = np.asarray(seg.labels[0][...])
    probs = np.asarray(seg.probs[0][...]).astype(int)
    analysed = labels > 0
    assert analysed.mean() > 0.3  # the tissue of the small region is analysed
    assert np.abs(probs.sum(axis=0)[analysed] - 255).max() <= len(SYNTHETIC_CLASSES)
    assert (probs[:, ~analysed] == 0).all()
    assert preview_path(out).is_file()
    _interior_check(out, cmu_small_region, model, 128, 16)


def test_precision_flag_reaches_the_model(synthetic_slide: SyntheticSlide, tiny_checkpoint: Path,
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--precision bf16 runs the model in bf16 (autocast on the CPU too); labels agree with fp32 almost
    everywhere and the output records what ran."""
    outs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.zarr"
        code, _, err = _cli(["segment", str(synthetic_slide.path), "--model", str(tiny_checkpoint), "--out",
                             str(out), "--quiet", "--device", "cpu", "--precision", precision], capsys)
        assert code == 0, err
        seg = open_segmentation(out)
        assert seg.metadata.model["precision"] == precision and seg.metadata.model["compiled"] is False
        outs[precision] = np.asarray(seg.labels[0][...])
    assert (outs["fp32"] == outs["bf16"]).mean() > 0.9


def test_lanes_flag_reaches_the_model_and_changes_nothing_but_threads(
        synthetic_slide: SyntheticSlide, tiny_checkpoint: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """--lanes 2 on the CPU: the model is called from two threads, and the output equals one lane's."""
    from wsiseg.model import SamPathPredictor

    threads: set[str] = set()
    predict = SamPathPredictor.predict

    def recording(self: SamPathPredictor, tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        import threading

        threads.add(threading.current_thread().name)
        return predict(self, tiles, out_size)

    monkeypatch.setattr(SamPathPredictor, "predict", recording)
    arrays = {}
    for lanes in ("1", "2"):
        threads.clear()
        out = tmp_path / f"lanes{lanes}.zarr"
        code, _, err = _cli(["segment", str(synthetic_slide.path), "--model", str(tiny_checkpoint), "--out",
                             str(out), "--quiet", "--device", "cpu", "--lanes", lanes], capsys)
        assert code == 0, err
        assert len(threads) == int(lanes), threads
        seg = open_segmentation(out)
        arrays[lanes] = (np.asarray(seg.probs[0][...]), np.asarray(seg.labels[0][...]))
    for one, two in zip(arrays["1"], arrays["2"], strict=True):
        np.testing.assert_array_equal(one, two)
    code, _, err = _cli(["segment", str(synthetic_slide.path), "--model", str(tiny_checkpoint), "--out",
                         str(tmp_path / "x.zarr"), "--lanes", "0"], capsys)
    assert code == 2 and "--lanes" in err


@pytest.mark.parametrize(("extra", "width"), [([], 1024), (["--preview-size", "300"], 300)])
def test_preview_is_about_preview_size_on_its_long_side(synthetic_slide: SyntheticSlide, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str], extra: list[str],
                                                        width: int) -> None:
    from PIL import Image

    out = tmp_path / "p.zarr"
    code, _, err = _cli(["segment", str(synthetic_slide.path), "--model", "null", "--mpp", "2", "--tile-size",
                         "128", "--out", str(out), "--quiet", *extra], capsys)
    assert code == 0, err
    # the output grid is 256 x 192 px (8 um/px); the preview is drawn at the slide's 2048 x 1536 aspect
    with Image.open(preview_path(out)) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[1] == width
    slide_part = pixels[: round(width * 1536 / 2048)]
    assert (slide_part.reshape(-1, 3).std(axis=0) > 5).all()  # the slide and the class colours, not blank
