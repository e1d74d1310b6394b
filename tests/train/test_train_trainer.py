"""Trainer: resume equals an uninterrupted run; checkpoints, logs; recipes; CLI errors; evaluate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from wsiseg.cli import main
from wsiseg.errors import CheckpointError, ClassMismatchError, ConfigError
from wsiseg.model import load_model, read_checkpoint
from wsiseg.train.config import TrainConfig
from wsiseg.train.datasets import build_dataset
from wsiseg.train.evaluate import evaluate
from wsiseg.train.schedule import build_scheduler, lr_factor
from wsiseg.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


def _config(data: Path, out: Path, epochs: int, **kw: object) -> TrainConfig:
    base = dict(dataset="folder", data_dir=str(data), patch_size=64, preset="tiny", input_size=64,
                epochs=epochs, batch_size=2, accumulate=2, lr=1e-3, warmup=1, milestones=[1.5], num_workers=0,
                out_dir=str(out), device="cpu", val_fraction=0.34, seed=5)
    base.update(kw)
    return TrainConfig.from_dict(base)


def _sets(data: Path) -> tuple:
    return (build_dataset("folder", data, "train", patch_size=64, val_fraction=0.34, seed=5),
            build_dataset("folder", data, "val", patch_size=64, val_fraction=0.34, seed=5))


def test_resume_equals_uninterrupted_run(tiny_folder: Path, tmp_path: Path) -> None:
    train, val = _sets(tiny_folder)
    assert len(train) == 4 and len(val) == 2
    straight = Trainer(_config(tiny_folder, tmp_path / "a", 3), train, val, progress=False).fit()
    Trainer(_config(tiny_folder, tmp_path / "b", 1), train, val, progress=False).fit()
    resumed = Trainer(_config(tiny_folder, tmp_path / "b", 3), train, val, progress=False).fit(resume=True)
    a = read_checkpoint(straight.last).state_dict
    b = read_checkpoint(resumed.last).state_dict
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    # the decoder really moved away from its initialisation
    first = read_checkpoint(straight.best).state_dict
    assert any(not torch.equal(first[k], a[k]) for k in a) or straight.best_record["epoch"] == 3
    for ra, rb in zip(straight.history, resumed.history, strict=True):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=1e-6)
        assert ra["val_micro_dice"] == pytest.approx(rb["val_micro_dice"], abs=1e-9)
    # logs: one record per epoch in JSONL and CSV, and a plot
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert len((tmp_path / "b" / "metrics.csv").read_text().splitlines()) == 4
    assert (tmp_path / "b" / "curves.png").stat().st_size > 1000
    # the checkpoint is the model's own format, with classes, mpp/tile size and the recipe
    data = read_checkpoint(resumed.last)
    assert data.classes.names == ["background", "object"] and data.tile_size == 64
    assert data.provenance["training"]["epoch"] == 3
    assert data.provenance["training"]["recipe"]["alpha"] == 0.25


# The multipliers the reference code's own LambdaLR gave at these optimiser steps (REFERENCE section 9):
# BCSS warm-up 72 steps, decays at 72 * 25 and 72 * 29; CRAG 46, 23 * 50, 23 * 55.
REFERENCE_LR = {
    "bcss": (72, [1800, 2088], {0: 0.0, 1: 1 / 72, 35: 35 / 72, 71: 71 / 72, 72: 1.0, 73: 1.0, 1799: 1.0,
                                1800: 0.1, 1801: 0.1, 2087: 0.1, 2088: 0.01, 2304: 0.01}),
    "crag": (46, [1150, 1265], {0: 0.0, 1: 1 / 46, 23: 0.5, 45: 45 / 46, 46: 1.0, 47: 1.0, 1149: 1.0,
                                1150: 0.1, 1151: 0.1, 1264: 0.1, 1265: 0.01, 1380: 0.01}),
}


@pytest.mark.parametrize("recipe", ["bcss", "crag"])
def test_lr_schedule_equals_the_reference(recipe: str) -> None:
    warmup, milestones, expected = REFERENCE_LR[recipe]
    cfg = TrainConfig.from_file(REPO / "pipelines" / f"{recipe}.yaml")
    assert cfg.schedule_unit.value == "step"
    assert (round(cfg.warmup), [round(m) for m in cfg.milestones]) == (warmup, milestones)
    for step, factor in expected.items():
        assert lr_factor(step, warmup, milestones, cfg.lr_decay) == pytest.approx(factor, abs=1e-12), step
    # and through torch's LambdaLR stepped once per optimiser step, as the trainer does
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(opt, warmup=cfg.warmup, milestones=cfg.milestones, gamma=cfg.lr_decay,
                            steps_per_unit=1)
    seen = []
    for _ in range(max(expected) + 1):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for step, factor in expected.items():
        assert seen[step] == pytest.approx(cfg.lr * factor, abs=1e-15), step


def test_recipes_load_with_the_paper_hyper_parameters() -> None:
    bcss = TrainConfig.from_file(REPO / "pipelines" / "bcss.yaml")
    assert (bcss.epochs, bcss.batch_size * bcss.accumulate, bcss.alpha, bcss.beta) == (32, 24, 0.25, 0.0625)
    assert (bcss.lr, bcss.weight_decay, bcss.amp.value) == (1e-4, 1e-2, "off")
    assert (bcss.mpp, bcss.patch_size, bcss.preset) == (0.25, 1024, "sam_path_vit_b")
    crag = TrainConfig.from_file(REPO / "pipelines" / "crag.yaml", {"epochs": 3})
    assert (crag.epochs, crag.batch_size, crag.alpha, crag.beta, crag.amp.value) == (3, 6, 0.125, 0.0, "off")
    assert (crag.whole_image, crag.patch_size, crag.input_size) == (True, 1536, 1024)
    glas = TrainConfig.from_file(REPO / "pipelines" / "glas-cpu.yaml")
    assert Path(glas.class_map or "").is_file() and glas.preset == "mini"
    assert (glas.epochs, glas.milestones, glas.mpp, glas.input_size) == (28, [22.0], 1.24, 256)


def test_config_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: folder\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_file(bad)
    with pytest.raises(ConfigError, match="epochs must be an integer"):
        TrainConfig.from_dict({"epochs": "ten"})
    with pytest.raises(ConfigError, match="frozen encoders"):
        TrainConfig.from_dict({"cache_embeddings": "x", "train_encoders": True})
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", str(bad), "--data-dir", str(tmp_path)])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("wsiseg: error:") and "learning_rate" in err and "\n" not in err


def test_cli_train_then_evaluate(tiny_folder: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    main(["train", "--dataset", "folder", "--data-dir", str(tiny_folder), "--patch-size", "64",
          "--preset", "tiny", "--input-size", "64", "--epochs", "1", "--batch-size", "4", "--accumulate", "1",
          "--num-workers", "0", "--device", "cpu", "--out", str(out), "--quiet",
          "--cache-embeddings", str(tmp_path / "cache")])
    assert (out / "best.wsiseg").is_file() and (out / "last.wsiseg").is_file()
    assert len(list((tmp_path / "cache").glob("*/*.npy"))) == 6  # 4 train + 2 val patches cached
    capsys.readouterr()
    report = tmp_path / "eval.json"
    main(["evaluate", "--model", str(out / "best.wsiseg"), "--dataset", "folder",
          "--data-dir", str(tiny_folder), "--split", "all", "--device", "cpu", "--json", str(report),
          "--quiet", "--save-predictions", str(tmp_path / "pred")])
    table = capsys.readouterr().out
    assert "micro (paper)" in table and "object" in table
    rep = json.loads(report.read_text())
    assert rep["images"] == 6 and rep["labelled_pixels"] == 6 * 64 * 64
    assert sum(map(sum, rep["confusion_matrix"]["counts"])) == 6 * 64 * 64
    assert len(list((tmp_path / "pred").glob("*.png"))) == 6
    # 48-px patches overlap (starts 0 and 16): per patch 6 x 4 x 48^2 pixels count, per image 6 x 64^2
    for scoring, pixels in (("--per-patch", 6 * 4 * 48 * 48), ("--per-image", 6 * 64 * 64)):
        main(["evaluate", "--model", str(out / "best.wsiseg"), "--dataset", "folder", "--patch-size", "48",
              "--data-dir", str(tiny_folder), "--split", "all", "--device", "cpu", "--json", str(report),
              "--quiet", scoring])
        assert json.loads(report.read_text())["labelled_pixels"] == pixels
    assert "each image pixel counted once" in capsys.readouterr().out
    # a model with 2 classes cannot be scored against a 3-class data set
    three = tmp_path / "three"
    three.mkdir()
    for sub in ("images", "masks"):
        (three / sub).symlink_to(tiny_folder / sub)
    (three / "classes.yaml").write_text("classes:\n  - {name: a, value: 0}\n  - {name: b, value: 255}\n"
                                        "  - {name: c, value: 7}\n")
    predictor = load_model(out / "best.wsiseg", device="cpu")
    with pytest.raises(ClassMismatchError, match="2 classes"):
        evaluate(predictor, build_dataset("folder", three, "all", patch_size=64), progress=False)


def test_resume_state_loads_weights_only_and_a_planted_one_is_refused(
        tmp_path: Path, marker: Path, planted: object, tiny_folder: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """last.state.pt holds only tensors and plain values; a state file that would run code when
    unpickled is refused with one line, and its code never runs."""
    out = tmp_path / "run"
    args = ["train", "--dataset", "folder", "--data-dir", str(tiny_folder), "--preset", "tiny",
            "--input-size", "64", "--patch-size", "32", "--batch-size", "4", "--num-workers", "0",
            "--device", "cpu", "--out", str(out), "--quiet"]
    main([*args, "--epochs", "1"])
    state = torch.load(out / "last.state.pt", weights_only=True)
    assert state["format"] == "wsiseg-train-state" and state["epoch"] == 1
    state["history"] = [planted]
    torch.save(state, out / "last.state.pt")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--epochs", "2", "--resume"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    error = [line for line in err.splitlines() if line.startswith("wsiseg: error:")]
    assert len(error) == 1 and "it is not read" in error[0] and "Traceback" not in err
    assert not marker.exists()


def _as_format_1(state: dict) -> dict:
    """A format-2 resume state rewritten as wsiseg 0.1 wrote it: no format tag, Python's RNG state as its
    tuple and NumPy's as ``np.random.get_state()``'s tuple with a uint32 array (a pickled NumPy object)."""
    rng = state["rng"]
    py, npy = rng["python"], rng["numpy"]
    legacy_rng = {"python": (py["version"], tuple(py["state"]), py["gauss"]),
                  "numpy": (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                            npy["cached_gaussian"]),
                  "torch": rng["torch"]}
    kept = {k: v for k, v in state.items() if k not in ("format", "format_version", "rng")}
    return kept | {"rng": legacy_rng}


def test_resume_from_a_wsiseg_0_1_state_file_is_exact(tiny_folder: Path, tmp_path: Path) -> None:
    """A format-1 state (NumPy's RNG state pickled as an array) is read without unpickling NumPy (the array
    is rebuilt from its bytes) and resumes exactly like a format-2 one."""
    from wsiseg.model.torchfile import torch_load

    train, val = _sets(tiny_folder)
    Trainer(_config(tiny_folder, tmp_path / "new", 1), train, val, progress=False).fit()
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    state = torch.load(tmp_path / "old" / "last.state.pt", weights_only=True)
    torch.save(_as_format_1(state), tmp_path / "old" / "last.state.pt")
    with pytest.raises(CheckpointError, match="Unsupported global"):  # not plain data: needs the legacy path
        torch_load(tmp_path / "old" / "last.state.pt", "training state")
    results = [Trainer(_config(tiny_folder, tmp_path / run, 2), train, val, progress=False).fit(resume=True)
               for run in ("new", "old")]
    a, b = (read_checkpoint(r.last).state_dict for r in results)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["train_loss"] for r in results[0].history] == [r["train_loss"] for r in results[1].history]
