"""Per-patch and per-image scoring of ``evaluate``: pixel counts and the averaging of overlapping patches,
checked against hand computations on small folder data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from wsiseg.classes import ClassList
from wsiseg.errors import ConfigError, DatasetError
from wsiseg.train.datasets import PatchDataset, build_dataset
from wsiseg.train.evaluate import Scoring, evaluate, stitched_probs

P = 16  # patch side (pixels)
SIZES = {"wide": (40, 30), "small": (12, 10)}  # name -> (width, height); "small" is one padded patch


class RampModel:
    """p(class 1) rises from 0 at a tile's left column to 1 at its right column, whatever the pixels."""

    mpp = None
    tile_size = P
    device = "cpu"
    output_stride = 1

    def __init__(self, classes: ClassList) -> None:
        self.classes = classes

    def predict(self, tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        n, h, w = tiles.shape[:3]
        p1 = np.broadcast_to(np.arange(w, dtype=np.float32) / (w - 1), (n, h, w))
        return np.stack([1.0 - p1, p1], axis=1).astype(np.float32)

    def provenance(self) -> dict[str, Any]:
        return {"name": "ramp"}


class ConstantModel(RampModel):
    """Every pixel class 1 ("all gland")."""

    def predict(self, tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        out = np.zeros((tiles.shape[0], 2, *tiles.shape[1:3]), dtype=np.float32)
        out[:, 1] = 1.0
        return out


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, (w, h) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        mask = (rng.random((h, w)) < 0.4).astype(np.uint8) * 255
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    (root / "classes.yaml").write_text("classes:\n  - {name: background, value: 0}\n"
                                       "  - {name: gland, value: 255}\n")
    return root


def _members(data: PatchDataset, name: str) -> list[int]:
    """The patch indices of source file ``name`` (looked up by name, not by list position)."""
    return next(m for m in data.files() if data.patches[m[0]].image_path.stem == name)


def _masks(root: Path) -> dict[str, np.ndarray]:
    return {name: np.asarray(Image.open(root / "masks" / f"{name}.png")) // 255 for name in SIZES}


def test_per_image_scoring_counts_every_pixel_once_and_per_patch_counts_overlaps_twice(folder: Path) -> None:
    data = build_dataset("folder", folder, "all", patch_size=P)
    model = ConstantModel(data.classes)
    masks = _masks(folder)
    fg = sum(int(m.sum()) for m in masks.values())
    bg = sum(m.size for m in masks.values()) - fg
    images = evaluate(model, data, progress=False, scoring=Scoring.IMAGES)
    assert images.images == 2 and images.dataset["patches"] == len(data) == 3 * 2 + 1
    assert images.scores.confusion == ((0, bg), (0, fg))
    assert images.dataset["scoring"] == "images"
    # by hand: "wide" 40 x 30 is cut at x 0, 12, 24 and y 0, 14; every patch holds 16 x 16 image pixels
    patches = evaluate(model, data, progress=False)
    assert patches.images == 7 and patches.dataset["scoring"] == "patches"
    assert patches.scores.pixels == 6 * P * P + 12 * 10
    assert patches.scores.micro_dice != pytest.approx(images.scores.micro_dice)


def test_overlapping_patches_are_averaged(folder: Path) -> None:
    """Each pixel's probability is the mean over the patches covering it: with the ramp model, column X
    covered by patches starting at s gets mean((X - s) / 15) over those s."""
    data = build_dataset("folder", folder, "all", patch_size=P)
    members = _members(data, "wide")
    probs, _ = stitched_probs(RampModel(data.classes), data, members, (30, 40), batch_size=4)
    starts = [0, 12, 24]  # patch_starts(40, 16), by hand
    expected = np.array([np.mean([(x - s) / 15 for s in starts if s <= x < s + P]) for x in range(40)])
    np.testing.assert_allclose(probs[1], np.broadcast_to(expected, (30, 40)), atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-6)
    # columns 12-15 are covered by patches at 0 (p = 12/15..15/15) and 12 (0..3/15): mean 0.4..0.6
    assert expected[12] == pytest.approx(0.4) and expected[15] == pytest.approx(0.6)


def test_per_image_predictions_are_written_per_image(folder: Path, tmp_path: Path) -> None:
    data = build_dataset("folder", folder, "all", patch_size=P)
    out = tmp_path / "pred"
    evaluate(RampModel(data.classes), data, progress=False, scoring=Scoring.IMAGES, save_predictions=out)
    written = {p.stem: np.asarray(Image.open(p)) for p in out.glob("*.png")}
    assert sorted(written) == sorted(SIZES)
    for name, (w, h) in SIZES.items():
        assert written[name].shape == (h, w, 3)


def test_per_image_scoring_refuses_whole_image_sets_and_partial_files(folder: Path) -> None:
    data = build_dataset("folder", folder, "all", patch_size=P)
    whole = build_dataset("folder", folder, "all", patch_size=P)
    whole.whole_image = True  # as CRAG's --whole-image builds it: one resized sample per file
    with pytest.raises(ConfigError, match="one sample per image"):
        evaluate(ConstantModel(data.classes), whole, progress=False, scoring=Scoring.IMAGES)
    members = _members(data, "wide")
    with pytest.raises(DatasetError, match=r"every patch of wide\.png"):
        stitched_probs(ConstantModel(data.classes), data, members[:-1], (30, 40), batch_size=4)
