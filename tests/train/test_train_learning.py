"""Training learns: synthetic-slide patches (embedding cache), real GlaS glands (trainable encoders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsiseg.model import load_model
from wsiseg.train.config import TrainConfig
from wsiseg.train.datasets import build_dataset
from wsiseg.train.evaluate import evaluate
from wsiseg.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_model_learns_synthetic_patches_from_the_cache(synthetic_folder: Path, tmp_path: Path) -> None:
    opts = dict(patch_size=128, val_fraction=0.25, seed=0)
    train = build_dataset("folder", synthetic_folder, "train", **opts)
    val = build_dataset("folder", synthetic_folder, "val", **opts)
    assert (len(train), len(val)) == (24, 8)
    cfg = TrainConfig.from_dict(dict(
        dataset="folder", data_dir=str(synthetic_folder), patch_size=128, preset="tiny", input_size=128,
        epochs=16, batch_size=4, accumulate=1, lr=2e-3, warmup=0, milestones=[12], num_workers=0,
        device="cpu", val_fraction=0.25, out_dir=str(tmp_path / "run"),
        cache_embeddings=str(tmp_path / "cache")))
    result = Trainer(cfg, train, val, progress=False).fit()
    best = result.best_record
    assert best["val_micro_dice"] > 0.9, result.history
    # the cached-feature model scores the same from images through the Predictor (load -> predict)
    report = evaluate(load_model(result.best, device="cpu"), val, progress=False)
    assert report.scores.micro_dice == pytest.approx(best["val_micro_dice"], abs=1e-3)
    assert report.scores.micro_dice > 0.9


@pytest.mark.slow
@pytest.mark.shared
def test_glas_trainable_tiny_model_beats_all_gland(glas_dir: Path, tmp_path: Path) -> None:
    opts = dict(patch_size=128, mpp=2.48, source_mpp=0.62, val_fraction=0.2, seed=0,
                class_map=REPO / "pipelines" / "glas-classes.yaml")
    train = build_dataset("folder", glas_dir, "train", **opts)
    test = build_dataset("folder", glas_dir, "val", **opts)
    assert (len(train.groups), len(test.groups)) == (16, 4)
    assert not set(train.groups) & set(test.groups)
    cfg = TrainConfig.from_file(REPO / "pipelines" / "glas-cpu.yaml", dict(
        data_dir=str(glas_dir), out_dir=str(tmp_path / "run"), epochs=12, milestones=[9], device="cpu"))
    result = Trainer(cfg, train, None, progress=False).fit()
    report = evaluate(load_model(result.last, device="cpu"), test, progress=False)
    labels = np.concatenate([test[i][1].ravel() for i in range(len(test))])
    labels = labels[labels != test.classes.ignore_index]
    gland, total = int((labels == 1).sum()), labels.size
    all_gland_dice = 2 * gland / (gland + total)
    gland_dice = report.scores.dice[1]
    print(f"GlaS held-out gland Dice {gland_dice:.4f} vs all-gland {all_gland_dice:.4f}; "
          f"micro Dice {report.scores.micro_dice:.4f}")
    assert gland_dice > all_gland_dice + 0.05
    assert report.scores.micro_dice > 1 - gland / total  # also beats "all background" accuracy
