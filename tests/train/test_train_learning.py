"""Training learns: synthetic-slide patches (embedding cache), real GlaS glands (trainable encoders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsiseg.model import load_model, read_checkpoint
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
def test_glas_real_data_beats_all_gland(glas_dir: Path, tmp_path: Path) -> None:
    """Real GlaS images: 16 train a tiny model with trainable encoders (pipelines/glas-cpu.yaml as is),
    the other 4 are scored from saved predictions; gland Dice must clearly beat predicting "all gland",
    and the report must agree with a recount of the saved PNGs."""
    opts = dict(patch_size=128, mpp=2.48, source_mpp=0.62, val_fraction=0.2, seed=0,
                class_map=REPO / "pipelines" / "glas-classes.yaml")
    train = build_dataset("folder", glas_dir, "train", **opts)
    test = build_dataset("folder", glas_dir, "val", **opts)
    assert (len(train.groups), len(test.groups)) == (16, 4)
    assert not set(train.groups) & set(test.groups)
    cfg = TrainConfig.from_file(REPO / "pipelines" / "glas-cpu.yaml", dict(
        data_dir=str(glas_dir), out_dir=str(tmp_path / "run"), device="cpu"))
    assert cfg.train_encoders and cfg.input_size == 256
    result = Trainer(cfg, train, None, progress=False).fit()
    before = read_checkpoint(result.last)
    assert before.config.train_encoders and before.mpp == 2.48 and before.tile_size == 128
    report = evaluate(load_model(result.last, device="cpu"), test, save_predictions=tmp_path / "pred",
                      progress=False)
    # recount the confusion matrix from the saved colour PNGs and the labels
    palette = np.array(test.classes.colors, dtype=np.int16)
    counts = np.zeros((2, 2), dtype=np.int64)
    for i in range(len(test)):
        rgb = np.asarray(Image.open(tmp_path / "pred" / f"{test.sample_id(i)}.png")).astype(np.int16)
        pred = np.argmin(np.abs(rgb[..., None, :] - palette).sum(-1), axis=-1)
        label = test[i][1]
        keep = label != test.classes.ignore_index
        np.add.at(counts, (label[keep], pred[keep]), 1)
    assert counts.tolist() == [list(r) for r in report.scores.confusion]
    assert report.scores.micro_dice == pytest.approx(np.trace(counts) / counts.sum())
    # "all gland" on the same patches: TP = gland pixels, FP = background pixels, FN = 0
    gland, background = int(counts[1].sum()), int(counts[0].sum())
    all_gland_dice = 2 * gland / (2 * gland + background)
    assert all_gland_dice == pytest.approx(0.622, abs=0.005)
    gland_dice = 2 * counts[1, 1] / (2 * counts[1, 1] + counts[0, 1] + counts[1, 0])
    assert report.scores.dice[1] == pytest.approx(gland_dice)
    print(f"GlaS gland Dice {gland_dice:.4f} vs all-gland {all_gland_dice:.4f}")
    assert gland_dice > all_gland_dice + 0.05, (gland_dice, all_gland_dice, result.history[-1])
