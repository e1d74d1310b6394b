"""``wsiseg evaluate --method sam-points|sam-everything`` and ``wsiseg compare``: outputs and misuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FolderSubset
from wsiseg.baselines.compare import compare, to_markdown
from wsiseg.cli import main

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _report(path: Path, **fields: object) -> Path:
    base = {"dataset": {"name": "crag", "split": "test"}, "model": {"model": "SamPath", "config": {
        "variant": "sam_path", "sam": "sam_vit_b", "hipt": "hipt_vit_s"}}, "images": 40,
        "seconds_per_image": 0.29, "micro_dice": 0.9, "micro_iou": 0.82, "macro_dice": 0.88,
        "macro_iou": 0.8}
    path.write_text(json.dumps({**base, **fields}))
    return path


def test_cli_baselines_then_compare(crag_like: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--dataset", "crag", "--data-dir", str(crag_like), "--split", "test", "--sam-model", "tiny",
              "--device", "cpu", "--patch-size", "64", "--quiet"]
    code, out, err = _run(["evaluate", "--method", "sam-points", *common,
                           "--json", str(tmp_path / "sam.json")], capsys)
    assert code == 0, err
    assert "SAM, one dot per instance" in out and "micro (paper)" in out
    code, out, err = _run(["evaluate", "--method", "sam-points", "--post-process", *common,
                           "--json", str(tmp_path / "sam_pp.json")], capsys)
    assert code == 0, err
    code, out, err = _run(["evaluate", "--method", "sam-everything", "--points-per-side", "2", *common,
                           "--json", str(tmp_path / "sam_all.json")], capsys)
    assert code == 0, err
    assert "NOT a class prediction" in out
    sampath = _report(tmp_path / "sampath.json")
    code, out, err = _run(["compare", str(tmp_path / "sam.json"), str(tmp_path / "sam_pp.json"),
                           str(tmp_path / "sam_all.json"), str(sampath), "--markdown", str(tmp_path / "t.md"),
                           "--json", str(tmp_path / "t.json")], capsys)
    assert code == 0, err
    table = (tmp_path / "t.md").read_text()
    assert table == out
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert len(lines) == 5  # header + 4 rows
    assert "SAM, one dot per instance + post-processing" in table
    assert "SAM, segment everything *" in table and "not class metrics" in table
    assert "SamPath (sam_path, sam_vit_b+hipt_vit_s)" in table
    assert "Dice (paper)" in table  # every evaluate report carries the paper's numbers
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [r["class_metrics"] for r in rows] == [True, True, False, True]
    sam = json.loads((tmp_path / "sam.json").read_text())
    assert rows[0]["micro_dice"] == sam["micro_dice"]
    assert sam["paper"]["convention"] == "crag"  # gland Dice and gland recall, from the same matrix
    gland = sam["per_class"]["gland"]["dice"]
    assert sam["paper"]["dice"] == pytest.approx(gland)
    assert rows[0]["seconds_per_image"] == sam["seconds_per_image"] > 0


def test_compare_shows_the_papers_metrics_when_present(tmp_path: Path) -> None:
    paper = {"dice": 0.8841, "iou": 0.8831, "dice_macro": 0.5, "iou_macro": 0.5, "f1": 0.9,
             "note": "CRAG: gland Dice; IoU = gland recall"}
    rows = compare([_report(tmp_path / "a.json", paper=paper), _report(tmp_path / "b.json")],
                   labels=["SAM-Path", "older report"])
    table = to_markdown(rows)
    assert "Dice (paper)" in table and "0.8841" in table and "0.8831" in table
    assert "| older report |" in table and "n/a" in table
    assert "gland recall" in table


def test_compare_rejects_other_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.json").write_text("{}")
    code, _, err = _run(["compare", str(tmp_path / "x.json")], capsys)
    assert code == 1 and "is not a wsiseg evaluation report" in err and err.count("\n") == 1
    code, _, err = _run(["compare", str(_report(tmp_path / "a.json")), "--label", "a", "--label", "b"],
                        capsys)
    assert code == 1 and "one label per report" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "sampath", "--post-process", "--model", "m.wsiseg"], "--post-process is for --method sam"),
    (["--method", "sampath"], "no model given: pass --model"),
    (["--method", "sam-points", "--model", "m.wsiseg"], "--model is a SAM-Path checkpoint"),
    (["--method", "sam-points", "--points-per-side", "4"], "--points-per-side is for --method sam-every"),
    (["--method", "sam-points"], "needs its official weights: pass --sam-checkpoint sam_vit_b_01ec64.pth"),
    (["--method", "sam-everything", "--per-image"], "--per-image is for --method sampath"),
])
def test_misuse_gives_one_line_errors(args: list[str], message: str, crag_like: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["evaluate", *args, "--dataset", "crag", "--data-dir", str(crag_like)], capsys)
    assert code == 1 and message in err and err.count("\n") == 1, err


def test_sam_points_on_a_multi_class_data_set_is_refused(synthetic_folder_5: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["evaluate", "--method", "sam-points", "--sam-model", "tiny", "--dataset", "folder",
                         "--data-dir", str(synthetic_folder_5), "--split", "all"], capsys)
    assert code == 1 and "needs a data set with two classes" in err and err.count("\n") == 1


@pytest.fixture()
def synthetic_folder_5(tmp_path: Path) -> Path:
    import numpy as np
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "masks" / "a.png")
    (tmp_path / "classes.yaml").write_text("classes:\n" + "".join(
        f"  - {{name: c{v}, value: {v}}}\n" for v in range(5)))
    return tmp_path


@pytest.mark.shared
def test_real_glas_images_with_the_tiny_sam(shared_data: Path, tmp_path: Path, folder_subset: FolderSubset,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    src = shared_data / "glas-full" / "testA"
    if not (src / "images" / "testA_1.png").is_file():
        pytest.skip(f"{src} not found")
    data = folder_subset(src, ["testA_1.png", "testA_2.png"], tmp_path / "glas2")
    class_map = REPO / "pipelines" / "glas-classes.yaml"
    code, _, err = _run(["evaluate", "--method", "sam-points", "--sam-model", "tiny", "--post-process",
                         "--dataset", "folder", "--data-dir", str(data), "--split", "all",
                         "--class-map", str(class_map), "--patch-size", "1024",
                         "--device", "cpu", "--quiet", "--json", str(tmp_path / "glas.json")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "glas.json").read_text())
    assert report["images"] == 2 and report["instances"]["total"] > 5  # real glands, one dot each
    assert len(report["per_image"]) == 2 and all(p["seconds"] > 0 for p in report["per_image"])
    assert report["confusion_matrix"]["classes"] == ["background", "gland"]
