"""``wsiseg export``: writes QuPath GeoJSON; user mistakes give one-line errors and a non-zero exit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from wsiseg.cli import main


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        main([*args])
        raise SystemExit(0)
    code = info.value.code
    return int(code) if isinstance(code, int) else 1


def test_export_command_writes_geojson(segmentation: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cells.geojson"
    code = run("export", str(segmentation), "--geojson", str(out), "--classes", "tumour,necrosis",
               "--object-type", "detection", "--split-regions", "--min-area", "1", "--simplify", "0.5",
               "--block-size", "64")
    assert code == 0
    stdout = capsys.readouterr().out
    assert "wrote" in stdout and "features" in stdout
    features = json.loads(out.read_text())["features"]
    assert {f["properties"]["classification"]["name"] for f in features} == {"tumour", "necrosis"}
    assert all(f["properties"]["objectType"] == "detection" for f in features)
    assert all(f["properties"]["measurements"]["Area um^2"] >= 1 for f in features)


def test_export_command_bounds_parts_and_file_size(segmentation: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "slide.geojson"
    assert run("export", str(segmentation), "--geojson", str(out), "--max-parts", "4",
               "--max-file-mb", "0.004") == 0
    stdout = capsys.readouterr().out
    parts = sorted(tmp_path.glob("slide*.geojson"))
    assert len(parts) > 2 and f"{len(parts)} files of at most 0.004 MB" in stdout
    assert "slide-002.geojson" in stdout
    features = [f for p in parts for f in json.loads(p.read_text())["features"]]
    assert all(len(f["geometry"]["coordinates"]) <= 4 for f in features
               if f["geometry"]["type"] == "MultiPolygon")
    assert all(p.stat().st_size <= 4000 or len(json.loads(p.read_text())["features"]) == 1 for p in parts)
    for option, value in (("--max-parts", "0"), ("--max-file-mb", "-1")):  # Click's own usage error
        assert run("export", str(segmentation), "--geojson", str(out), option, value) == 2
        assert f"Invalid value for '{option}'" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--classes", "fat"], "unknown class 'fat'"),
    (["--level", "9"], "level 9 does not exist"),
    (["--level", "0", "--mpp", "1"], "not both"),
    (["--simplify", "-2"], "non-negative"),
])
def test_user_errors_are_one_line(segmentation: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  args: list[str], message: str) -> None:
    code = run("export", str(segmentation), "--geojson", str(tmp_path / "x.geojson"), *args)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert message in err and err.startswith("wsiseg: error:") and "\n" not in err
    assert "Traceback" not in err


def test_missing_segmentation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run("export", str(tmp_path / "none.zarr"), "--geojson", str(tmp_path / "x.geojson"))
    err = capsys.readouterr().err.strip()
    assert code != 0 and "does not exist" in err and "\n" not in err


def test_export_frame_option(make_segmentation: Callable[..., Path], label_map: np.ndarray, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """--frame qupath (default) shifts by the slide's bounds corner and says so; openslide does not."""
    seg = make_segmentation(label_map, slide={"bounds": {"x": 37, "y": 21, "width": 400, "height": 300}})
    qupath, openslide = tmp_path / "q.geojson", tmp_path / "o.geojson"
    assert run("export", str(seg), "--geojson", str(qupath), "--split-size", "128") == 0
    assert "qupath frame (OpenSlide level 0 minus (37, 21))" in capsys.readouterr().out
    assert run("export", str(seg), "--geojson", str(openslide), "--frame", "openslide") == 0
    assert "openslide frame" in capsys.readouterr().out
    q = json.loads(qupath.read_text())
    o = json.loads(openslide.read_text())
    assert q["properties"]["wsiseg"]["frame"] == "qupath"
    assert o["properties"]["wsiseg"]["frame"] == "openslide"
    xq = np.concatenate([shapely.get_coordinates(shape(f["geometry"])) for f in q["features"]])
    xo = np.concatenate([shapely.get_coordinates(shape(f["geometry"])) for f in o["features"]])
    assert xq.min(axis=0).tolist() == [0, 0] and xq.max(axis=0).tolist() == [400, 300]
    assert xo.min(axis=0).tolist() == [37, 21] and xo.max(axis=0).tolist() == [437, 321]
    assert run("export", str(seg), "--geojson", str(qupath), "--frame", "napari") != 0
