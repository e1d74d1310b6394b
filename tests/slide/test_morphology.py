"""Disk morphology by distance transforms equals scipy's structuring-element passes pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from wsiseg.slide import morphology


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5, 8, 13])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_scipy_with_a_disk(radius: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = ndimage.gaussian_filter(rng.random((70, 90)), 2.0) > 0.5
    mask[0, :] = True  # tissue touching the border: border_value=0 semantics matter
    disk = morphology.disk(radius)
    assert np.array_equal(morphology.dilate(mask, radius), ndimage.binary_dilation(mask, disk))
    assert np.array_equal(morphology.erode(mask, radius), ndimage.binary_erosion(mask, disk))
    closed = ndimage.binary_erosion(ndimage.binary_dilation(mask, disk), disk)
    assert np.array_equal(morphology.close(mask, radius), closed)
    opened = ndimage.binary_dilation(ndimage.binary_erosion(mask, disk), disk)
    assert np.array_equal(morphology.open_(mask, radius), opened)


def test_empty_and_full_masks() -> None:
    empty, full = np.zeros((5, 6), bool), np.ones((5, 6), bool)
    assert not morphology.dilate(empty, 3).any() and not morphology.erode(empty, 3).any()
    assert morphology.dilate(full, 3).all() and not morphology.erode(full, 3).any()  # outside: not mask
