"""``wsiseg export``: writes QuPath GeoJSON; user mistakes give one-line errors and a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
