"""README's first two commands, run verbatim through the real CLI entry point, and their error paths.

* ``wsiseg segment slide.svs --out slide.zarr``: the default model of the registry (a slim tiny model whose
  official-layout base files are registered too) on a small synthetic slide.
* ``wsiseg train --dataset bcss``: the packaged paper recipe, data from ``$WSISEG_DATA/bcss`` (a tiny
  synthetic BCSS tree) and registered official-layout SAM ViT-B / HIPT ViT-S files (random values). SAM
  ViT-B at 1024 px for 32 epochs cannot run on a CPU in a test, so only ``Trainer.fit`` is replaced: it
  checks the recipe, the data folder and that the model is built with the registered weights. The same
  command with ``--preset tiny --epochs 1`` (and small patches) really trains.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from wsiseg.cli import main
from wsiseg.infer import open_segmentation, preview_path
from wsiseg.io.hashing import file_sha256
from wsiseg.recipes import recipe_path
from wsiseg.registry import Registry
from wsiseg.synthetic import SYNTHETIC_CLASSES, write_synthetic_slide
from wsiseg.train.config import TrainConfig
from wsiseg.train.trainer import Trainer, TrainResult, build_model

from .train.test_train_datasets import BCSS_TRAIN, _make_bcss

BCSS_CLASSES = ["tumor", "stroma", "inflammatory", "necrosis", "others"]


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's world: WSISEG_HOME (empty registry), WSISEG_DATA holding a tiny BCSS tree at bcss/, and
    the working directory ``work/``; returns ``tmp_path``."""
    monkeypatch.setenv("WSISEG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WSISEG_DATA", str(tmp_path / "data"))
    _make_bcss(tmp_path / "data" / "bcss")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


@pytest.fixture(scope="module")
def paper_official_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """``sam_vit_b_01ec64.pth`` (segment-anything's build_sam_vit_b layout, ~375 MB) and
    ``vit256_small_dino.pth`` (HIPT's DINO ViT-S/16 layout), random values."""
    import torch

    from .model.conftest import dino_checkpoint, sam_state_dict

    d = tmp_path_factory.mktemp("official")
    files = {"sam": d / "sam_vit_b_01ec64.pth", "hipt": d / "vit256_small_dino.pth"}
    torch.save(sam_state_dict("vit_b", seed=11), files["sam"])
    torch.save(dino_checkpoint(384, 12, seed=12)[0], files["hipt"])
    yield files
    for path in files.values():  # ~550 MB: not kept until the session ends
        path.unlink(missing_ok=True)


def test_segment_slide_svs_out_slide_zarr(user: Path, slim_tiny_model: Path,
                                          tiny_official_files: dict[str, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # once: register the model as default and the base files its slim checkpoint needs
    code, _, err = _cli(["models", "add-base", *map(str, tiny_official_files.values())], capsys)
    assert code == 0, err
    code, _, err = _cli(["models", "add", "tiny", str(slim_tiny_model), "--default"], capsys)
    assert code == 0 and "note" not in err, err
    write_synthetic_slide(Path("slide.svs"), 1024, 768, mpp=0.5, seed=1)

    code, out, err = _cli(["segment", "slide.svs", "--out", "slide.zarr"], capsys)

    assert code == 0, err
    assert "1 slide: 1 done" in out
    seg = open_segmentation(Path("slide.zarr"))
    assert seg.finished and seg.classes.names == SYNTHETIC_CLASSES.names
    assert seg.metadata.analysis_mpp == 2.0  # the model's own resolution
    labels = np.asarray(seg.labels[0][...])
    assert labels.max() > 0  # tissue was analysed
    weights = seg.metadata.model["base_weights"]
    assert weights["sam"]["sha256"] == file_sha256(tiny_official_files["sam"])
    assert weights["hipt"]["sha256"] == file_sha256(tiny_official_files["hipt"])
    assert preview_path(Path("slide.zarr")).is_file()


def test_segment_with_wsiseg_model_and_flags(user: Path, slim_tiny_model: Path,
                                            tiny_official_files: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """WSISEG_MODEL (a path here) gives the model; the flags give its base files (none registered)."""
    write_synthetic_slide(Path("slide.svs"), 512, 512, mpp=0.5, seed=2)
    monkeypatch.setenv("WSISEG_MODEL", str(slim_tiny_model))
    code, _, err = _cli(["segment", "slide.svs", "--out", "a.zarr", "--quiet",
                         "--sam-checkpoint", str(tiny_official_files["sam"]),
                         "--hipt-checkpoint", str(tiny_official_files["hipt"])], capsys)
    assert code == 0, err
    assert open_segmentation(Path("a.zarr")).finished


def test_train_dataset_bcss(user: Path, paper_official_files: dict[str, Path],
                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    registry = Registry()
    for file in paper_official_files.values():
        registry.register_base_file(file)
    assert sorted(b.encoder for b in registry.base_files()) == ["hipt_vit_s", "sam_vit_b"]
    seen: dict[str, Any] = {}

    def fit(self: Trainer, resume: bool = False) -> TrainResult:
        """Everything but the training loop: the model the loop would train, built as it would."""
        model = build_model(self.config, len(self.classes))
        seen.update(config=self.config, train=self.train_set, val=self.val_set, resume=resume,
                    model_config=model.config, base_weights=dict(model.base_weights))
        out = Path(self.config.out_dir)
        return TrainResult(out, out / "last.wsiseg", out / "best.wsiseg",
                           [{"epoch": 1, "val_micro_dice": 0.5}])

    monkeypatch.setattr(Trainer, "fit", fit)

    code, out, err = _cli(["train", "--dataset", "bcss"], capsys)

    assert code == 0, err
    data = user / "data" / "bcss"
    recipe = TrainConfig.from_file(recipe_path("bcss"))
    assert seen["config"] == dataclasses.replace(
        recipe, data_dir=str(data), sam_checkpoint=str(paper_official_files["sam"]),
        hipt_checkpoint=str(paper_official_files["hipt"]))
    assert (recipe.preset, recipe.epochs, recipe.mpp, recipe.patch_size) == ("sam_path_vit_b", 32, 0.25, 1024)
    assert seen["train"].classes.names == BCSS_CLASSES and seen["resume"] is False
    assert set(seen["train"].groups) | set(seen["val"].groups) == {
        f"{c}_xmin100_ymin200_MPP-0.2500" for c in BCSS_TRAIN}
    assert (seen["model_config"].sam, seen["model_config"].hipt, seen["model_config"].input_size) == (
        "sam_vit_b", "hipt_vit_s", 1024)
    assert seen["base_weights"]["sam"]["sha256"] == file_sha256(paper_official_files["sam"])
    assert seen["base_weights"]["hipt"]["sha256"] == file_sha256(paper_official_files["hipt"])
    assert "using the registered SAM weights" in err and "best epoch 1" in out


def test_train_dataset_bcss_preset_tiny_trains(user: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CPU try-out the error message offers, shrunk to seconds (32-px patches, one epoch); then
    `wsiseg evaluate --dataset bcss` with the trained model registered as the default."""
    code, _, err = _cli(["train", "--dataset", "bcss", "--preset", "tiny", "--epochs", "1",
                         "--patch-size", "32", "--input-size", "64", "--batch-size", "8", "--accumulate", "1",
                         "--num-workers", "0", "--device", "cpu", "--out", "run", "--quiet"], capsys)
    assert code == 0, err
    from wsiseg.model import read_checkpoint

    ckpt = read_checkpoint(Path("run/best.wsiseg"))
    assert ckpt.classes.names == BCSS_CLASSES and ckpt.mpp == 0.25 and ckpt.tile_size == 32
    recipe = ckpt.provenance["training"]["recipe"]
    assert (recipe["alpha"], recipe["beta"], recipe["milestones"]) == (0.25, 0.0625, [1800.0, 2088.0])
    assert recipe["data_dir"] == str(user / "data" / "bcss")
    assert [json.loads(line)["epoch"] for line in Path("run/metrics.jsonl").read_text().splitlines()] == [1]
    # evaluate: the default model and $WSISEG_DATA/bcss stand in for --model and --data-dir
    code, _, err = _cli(["models", "add", "bcss-tiny", "run/best.wsiseg", "--default"], capsys)
    assert code == 0, err
    code, out, err = _cli(["evaluate", "--dataset", "bcss", "--split", "test", "--device", "cpu", "--quiet"],
                          capsys)
    assert code == 0, err
    assert "micro (paper)" in out and "necrosis" in out


def test_train_without_official_weights_is_one_line(user: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["train", "--dataset", "bcss"], capsys)
    assert code == 1 and err.startswith("wsiseg: error:") and err.count("\n") == 1, err
    for part in ("sam_vit_b_01ec64.pth", "vit256_small_dino.pth", "--sam-checkpoint/--hipt-checkpoint",
                 "wsiseg models add-base", "--preset tiny"):
        assert part in err, part
    code, _, err = _cli(["train", "--dataset", "crag", "--variant", "finetuned_sam"], capsys)
    assert code == 1 and "sam_vit_b_01ec64.pth" in err and "vit256" not in err and "--sam-checkpoint " in err


def test_train_data_dir_errors_and_folder_defaults(user: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["train", "--dataset", "crag", "--preset", "tiny"], capsys)  # no data/crag
    assert code == 1 and err.count("\n") == 1 and "no data folder: pass --data-dir" in err
    assert str(user / "data" / "crag") in err
    monkeypatch.delenv("WSISEG_DATA")
    code, _, err = _cli(["train", "--dataset", "bcss", "--preset", "tiny"], capsys)
    assert code == 1 and "set WSISEG_DATA to a folder holding bcss/" in err

    # --dataset folder keeps the built-in defaults (no recipe, no official weights needed)
    folder = user / "folder"
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 100 * i, np.uint8)).save(folder / "images" / f"{i}.png")
        Image.fromarray(np.full((32, 32), 255 * i, np.uint8)).save(folder / "masks" / f"{i}.png")
    (folder / "classes.yaml").write_text("classes:\n  - {name: a, value: 0}\n  - {name: b, value: 255}\n")
    seen: dict[str, TrainConfig] = {}

    def fit(self: Trainer, resume: bool = False) -> TrainResult:
        seen["config"] = self.config
        out = Path(self.config.out_dir)
        return TrainResult(out, out / "last.wsiseg", out / "best.wsiseg", [{"epoch": 1}])

    monkeypatch.setattr(Trainer, "fit", fit)
    code, _, err = _cli(["train", "--dataset", "folder", "--data-dir", str(folder)], capsys)
    assert code == 0, err
    assert seen["config"] == TrainConfig(dataset="folder", data_dir=str(folder))
