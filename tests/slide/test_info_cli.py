"""``wsiseg info`` through a subprocess: real values on good slides, one-line errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wsiseg.slide import make_tile_grid, open_slide
from wsiseg.synthetic import SlideLayout, SyntheticTruth, write_synthetic_slide
from wsiseg.tiling import Tiling

REPO = Path(__file__).resolve().parents[2]


def _info(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wsiseg", "info", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsiseg: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_info_json_on_synthetic(synthetic_tiff: SyntheticTruth) -> None:
    result = _info(synthetic_tiff.path, "--mpp", "0.5", "--tile-size", "256", "--overlap", "32",
                   "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["vendor"] == "generic-tiff"
    assert (info["width0"], info["height0"]) == (1800, 1300)
    assert info["mpp_x"] == pytest.approx(0.25) and info["mpp_source"] == "metadata"
    assert [lv["downsample"] for lv in info["levels"]] == pytest.approx([1, 2, 4], rel=2e-3)
    truth_tissue = (synthetic_tiff.labels(8.0) > 0).mean()
    assert abs(info["tissue_fraction"] - truth_tissue) < 0.06
    tiles = info["tiles"]
    assert (tiles["width_t"], tiles["height_t"]) == (900, 650)  # 1800 x 1300 at 0.25 -> 0.5 um/px
    assert (tiles["columns"], tiles["rows"], tiles["total"]) == (4, 3, 12)  # stride 224
    with open_slide(synthetic_tiff.path) as slide:
        assert tiles["total"] == make_tile_grid(slide, Tiling.create(0.5, 256, 32)).n_total
    assert 0 < tiles["with_tissue"] <= tiles["total"]


def test_info_text_on_cmu(cmu_small_region: Path) -> None:
    result = _info(cmu_small_region)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "aperio" in out and "2220 x 2967" in out and "0.499 x 0.499 um/px" in out
    assert "label, macro, thumbnail" in out and "objective power:  20" in out
    assert "4 total (2 x 2)" in out  # 1108 x 1481 at 1 um/px in 1024 tiles


def test_missing_path(tmp_path: Path) -> None:
    _assert_one_line_error(_info(tmp_path / "nope.svs"), "not found")


def test_text_file_named_svs(tmp_path: Path) -> None:
    fake = tmp_path / "fake.svs"
    fake.write_text("this is not a slide\n" * 10)
    _assert_one_line_error(_info(fake), "fake.svs")


def test_truncated_slide(synthetic_svs: SyntheticTruth, tmp_path: Path) -> None:
    data = synthetic_svs.path.read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(_info(cut), "cut.svs")


def test_truncated_real_slide(cmu_small_region: Path, tmp_path: Path) -> None:
    data = cmu_small_region.read_bytes()
    cut = tmp_path / "CMU-cut.svs"
    cut.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(_info(cut), "CMU-cut.svs")


def test_slide_without_mpp_needs_and_accepts_slide_mpp(tmp_path: Path) -> None:
    truth = write_synthetic_slide(tmp_path / "nompp.tiff", 1024, 768, layout=SlideLayout.TIFF,
                                  record_mpp=False)
    _assert_one_line_error(_info(truth.path), "--slide-mpp")
    result = _info(truth.path, "--slide-mpp", "0.5", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["mpp_x"] == 0.5 and info["mpp_source"] == "--slide-mpp"
    assert info["tiles"]["total"] == 1  # 512 x 384 at 1 um/px fits one 1024 tile


@pytest.mark.parametrize(("args", "fragment"), [(["--tile-size", "0"], "--tile-size"),
                                               (["--tile-size", "64", "--overlap", "64"], "overlap"),
                                               (["--slide-mpp", "-1"], "--slide-mpp"),
                                               (["--mpp", "0"], "--mpp")])
def test_bad_options(cmu_small_region: Path, args: list[str], fragment: str) -> None:
    result = _info(cmu_small_region, *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert fragment in result.stderr


def test_info_on_plain_png_with_mpp(tmp_path: Path, synthetic_svs: SyntheticTruth) -> None:
    from PIL import Image

    png = tmp_path / "crop.png"
    Image.fromarray(synthetic_svs.render(0, 0, 800, 600)).save(png)
    _assert_one_line_error(_info(png), "--slide-mpp")
    result = _info(png, "--slide-mpp", "0.5", "--mpp", "0.5", "--tile-size", "256", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["vendor"] == "image" and (info["width0"], info["height0"]) == (800, 600)
    assert info["levels"] == [{"level": 0, "width": 800, "height": 600, "downsample": 1.0, "mpp": 0.5}]
    assert (info["tiles"]["columns"], info["tiles"]["rows"]) == (4, 3)
    truth = (synthetic_svs.labels_region(0, 0, 800, 600, 0.5) > 0).mean()
    assert abs(info["tissue_fraction"] - truth) < 0.06


def test_directory_is_not_a_slide(tmp_path: Path) -> None:
    _assert_one_line_error(_info(tmp_path), "directory")
