"""The paper's post-processing drops exactly the masks covering more than half of the image."""

from __future__ import annotations

import numpy as np
import pytest

from wsiseg.baselines.postprocess import drop_oversized, oversized, union_label


def _mask(area: int, shape: tuple[int, int] = (10, 20)) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m.reshape(-1)[:area] = True
    return m


def test_removes_exactly_the_oversized_masks() -> None:
    areas = [0, 1, 99, 100, 101, 150, 200]  # the image has 200 pixels: half = 100
    masks = np.stack([_mask(a) for a in areas])
    assert oversized(masks).tolist() == [False, False, False, False, True, True, True]
    kept, dropped = drop_oversized(masks)
    assert dropped == 3
    assert [int(m.sum()) for m in kept] == [0, 1, 99, 100]


def test_no_masks_and_other_fractions() -> None:
    kept, dropped = drop_oversized(np.zeros((0, 4, 4), dtype=bool))
    assert kept.shape == (0, 4, 4) and dropped == 0
    assert oversized(np.stack([_mask(30), _mask(60)]), max_fraction=0.25).tolist() == [False, True]
    with pytest.raises(ValueError, match="masks must be"):
        oversized(np.zeros((4, 4), dtype=bool))


def test_union_label_marks_the_object_class() -> None:
    label = union_label(np.stack([_mask(3), _mask(5)]), (10, 20))
    assert label.dtype == np.uint8 and int(label.sum()) == 5
    assert not union_label(np.zeros((0, 10, 20), dtype=bool), (10, 20)).any()
