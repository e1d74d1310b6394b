"""Training learns: synthetic-slide patches (embedding cache), real GlaS glands (trainable encoders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FolderSubset
from wsiseg.model import load_model, read_checkpoint
from wsiseg.train.config import TrainConfig
from wsiseg.train.datasets import build_dataset
from wsiseg.train.evaluate import Scoring, evaluate
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
def test_glas_recipe_learns_glands_on_unseen_test_a(glas_full: Path, tmp_path: Path,
                                                    folder_subset: FolderSubset) -> None:
    """The GlaS CPU recipe (pipelines/glas-cpu.yaml, shortened to CI's budget: 24 training images, 6 epochs,
    the tiny preset instead of the recipe's mini, ~1.5x cheaper per step) segments 20 unseen Test A images
    clearly better than predicting "all gland" or "all background" (micro Dice), and finds the glands (gland
    Dice well above 0, the all-background score); the report agrees with a recount of the saved prediction
    PNGs. (The full recipe's figures on all of Test A are in README's benchmark table.)"""
    recipe = REPO / "pipelines" / "glas-cpu.yaml"
    cfg = TrainConfig.from_file(recipe, dict(data_dir=str(glas_full / "train"), out_dir=str(tmp_path / "run"),
                                             device="cpu", epochs=6, milestones=[5], val_fraction=0.0,
                                             preset="tiny"))
    opts = dict(patch_size=cfg.patch_size, mpp=cfg.mpp, source_mpp=cfg.source_mpp, seed=0,
                class_map=REPO / "pipelines" / "glas-classes.yaml")
    train_names = [f"train_{i}.png" for i in range(1, 25)]
    test_names = [f"testA_{i}.png" for i in range(41, 61)]
    train_dir = folder_subset(glas_full / "train", train_names, tmp_path / "train")
    test_dir = folder_subset(glas_full / "testA", test_names, tmp_path / "test")
    train = build_dataset("folder", train_dir, "all", **opts)
    test = build_dataset("folder", test_dir, "all", **opts)
    assert (len(train.groups), len(test.groups)) == (24, 20)
    assert cfg.train_encoders and cfg.input_size == 2 * cfg.patch_size and cfg.mpp == 1.24
    result = Trainer(cfg, train, None, progress=False).fit()
    before = read_checkpoint(result.last)
    assert before.config.train_encoders and before.mpp == cfg.mpp and before.tile_size == cfg.patch_size
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
    micro = np.trace(counts) / counts.sum()
    assert report.scores.micro_dice == pytest.approx(micro)
    # "all gland": TP = gland pixels, FP = background pixels (micro Dice = the gland share); "all background"
    gland, background = int(counts[1].sum()), int(counts[0].sum())
    all_gland_micro, all_gland_dice = gland / (gland + background), 2 * gland / (2 * gland + background)
    constant_micro = max(gland, background) / (gland + background)
    gland_dice = 2 * counts[1, 1] / (2 * counts[1, 1] + counts[0, 1] + counts[1, 0])
    assert report.scores.dice[1] == pytest.approx(gland_dice)
    print(f"GlaS Test A 41-60: micro Dice {micro:.4f} (all gland {all_gland_micro:.4f}, best constant "
          f"{constant_micro:.4f}), gland Dice {gland_dice:.4f} (all gland {all_gland_dice:.4f})")
    # measured: micro Dice 0.68 vs 0.52 for all gland and 0.48 for all background; gland Dice 0.67 (the
    # shortened run finds glands but not yet their whole extent; the full recipe reaches 0.848 on Test A).
    # With the recipe's mini preset instead of tiny: 0.686 / gland Dice 0.664, in 204 s instead of ~157 s.
    assert micro > constant_micro + 0.1, (micro, all_gland_micro, constant_micro, result.history[-1])
    assert gland_dice > 0.6, (gland_dice, result.history[-1])
    # per image: each of the 20 images' pixels counted once, with the same clear margin (measured: 0.688 vs
    # 0.518 for the best constant)
    per_image = evaluate(load_model(result.last, device="cpu"), test, progress=False, scoring=Scoring.IMAGES)
    sources = [test.source(members[0])[1] for members in test.files()]
    gland_px = sum(int((lab == 1).sum()) for lab in sources)
    pixels = sum(int((lab != test.classes.ignore_index).sum()) for lab in sources)
    assert per_image.images == 20 and per_image.scores.pixels == pixels < counts.sum()
    best_constant = max(gland_px, pixels - gland_px) / pixels
    print(f"per image: micro Dice {per_image.scores.micro_dice:.4f} (best constant {best_constant:.4f})")
    assert per_image.scores.micro_dice > best_constant + 0.1, (per_image.scores.micro_dice, best_constant)
