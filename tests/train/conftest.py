"""Fixtures of the training tests: small folder data sets built from synthetic slides with exact labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

SYNTH_MPP = 2.0  # um/px of the patches cut from the synthetic slides


def _write_folder(root: Path, images: list[np.ndarray], labels: list[np.ndarray], names: list[str]) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for img, lab, name in zip(images, labels, names, strict=True):
        Image.fromarray(img).save(root / "images" / f"{name}.png")
        Image.fromarray(lab).save(root / "masks" / f"{name}.png")


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder data set of 8 images of 256x256 px at 2 um/px cut from two synthetic slides (5 classes).

    Labels are the slides' exact ground truth (:meth:`SyntheticTruth.labels_region`).
    """
    from wsiseg.synthetic import write_synthetic_patch_folder

    root = tmp_path_factory.mktemp("synthetic_folder") / "data"
    return write_synthetic_patch_folder(root, seeds=range(2), slide_size0=2048, mpp=SYNTH_MPP, patch=256)


@pytest.fixture()
def tiny_folder(tmp_path: Path) -> Path:
    """Six 64x64 two-class images (dark disc on light ground) for fast trainer tests."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    yy, xx = np.mgrid[:64, :64]
    for _ in range(6):
        cx, cy, r = rng.integers(20, 44), rng.integers(20, 44), rng.integers(8, 18)
        lab = (((xx - cx) ** 2 + (yy - cy) ** 2) < r * r).astype(np.uint8)
        img = np.where(lab[..., None] == 1, 60, 220).astype(np.int16) + rng.integers(-20, 20, (64, 64, 3))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        labels.append(lab * 255)
    data = tmp_path / "tiny"
    _write_folder(data, images, labels, [f"im{i}" for i in range(6)])
    (data / "classes.yaml").write_text("classes:\n  - {name: background, value: 0}\n"
                                       "  - {name: object, value: 255}\n")
    return data
