"""Fixtures of the baseline tests: small CRAG-like (instance ids) and GlaS-like (binary) folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

SIZE = 96  # image side; patches of 64 px overlap, so instances are cut by patch borders too


def c_shape(size: int, cy: int, cx: int, r_out: int, r_in: int) -> np.ndarray:
    """A ring with its right quarter open: a C whose centroid lies in its (empty) middle."""
    yy, xx = np.mgrid[:size, :size]
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    ring = (d2 <= r_out ** 2) & (d2 >= r_in ** 2)
    gap = (xx > cx) & (np.abs(yy - cy) < r_out // 2)
    return ring & ~gap


def instance_masks(seed: int) -> np.ndarray:
    """Instance ids (SIZE, SIZE): a C-shaped gland, a disc, a rectangle touching the border, a blob."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((SIZE, SIZE), dtype=np.uint16)
    ids[c_shape(SIZE, 30, 30, 18, 10)] = 1
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = rng.integers(62, 80, size=2)
    ids[(yy - cy) ** 2 + (xx - cx) ** 2 <= 100] = 2
    ids[0:12, 60:90] = 3  # touches the top border
    ids[70:90, 5:25] = 4
    ids[80:84, 25:40] = 4  # instance 4 is an L (still one instance)
    return ids


@pytest.fixture(scope="session")
def make_c_shape() -> Callable[[int, int, int, int, int], np.ndarray]:
    """:func:`c_shape` for tests: ``(size, cy, cx, r_out, r_in) -> bool mask``."""
    return c_shape


def image_for(ids: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(100 + seed)
    img = np.where(ids[..., None] > 0, 90, 210).astype(np.int16) + rng.integers(-25, 25, (*ids.shape, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def crag_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CRAG layout with 16-bit instance-id masks: 2 train and 2 test images of 96x96 px."""
    root = tmp_path_factory.mktemp("crag_like")
    for part, seeds in (("train", (0, 1)), ("test", (2, 3))):
        (root / part / "Images").mkdir(parents=True)
        (root / part / "Annotation").mkdir()
        for s in seeds:
            ids = instance_masks(s)
            Image.fromarray(image_for(ids, s)).save(root / part / "Images" / f"{part}_{s}.png")
            Image.fromarray(ids).save(root / part / "Annotation" / f"{part}_{s}.png")
    return root


@pytest.fixture(scope="session")
def glas_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder data set with binary 0/255 masks and a class map: 3 images with glands, 1 without."""
    root = tmp_path_factory.mktemp("glas_like")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for s in range(3):
        ids = instance_masks(10 + s)
        Image.fromarray(image_for(ids, 10 + s)).save(root / "images" / f"im{s}.png")
        Image.fromarray(((ids > 0) * 255).astype(np.uint8)).save(root / "masks" / f"im{s}.png")
    empty = np.zeros((SIZE, SIZE), dtype=np.uint16)
    Image.fromarray(image_for(empty, 20)).save(root / "images" / "empty.png")
    Image.fromarray(np.zeros((SIZE, SIZE), dtype=np.uint8)).save(root / "masks" / "empty.png")
    (root / "classes.yaml").write_text("classes:\n  - {name: background, value: 0}\n"
                                       "  - {name: gland, value: 255}\n")
    return root
