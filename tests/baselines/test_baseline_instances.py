"""Ground-truth instances and dot prompts: every prompt lands inside its instance, C shapes included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from wsiseg.baselines.instances import (
    best_match_iou,
    components,
    ground_truth_instances,
    instance_iou,
    prompt_points,
)
from wsiseg.train.datasets import build_dataset


def test_c_shaped_instance_gets_its_prompt_inside_not_at_its_centroid(
        make_c_shape: Callable[..., np.ndarray]) -> None:
    mask = make_c_shape(96, 40, 40, 20, 11)
    cy, cx = ndimage.center_of_mass(mask)
    assert not mask[round(cy), round(cx)], "the test shape's centroid must lie outside it"
    ids, points = prompt_points(mask.astype(np.int32))
    assert ids.tolist() == [1]
    x, y = points[0]
    assert mask[y, x]
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    assert dist[y, x] == dist.max()  # the pixel farthest from the border


def test_ties_go_to_the_first_pixel_in_row_major_order() -> None:
    inst = np.zeros((10, 12), dtype=np.int32)
    inst[2:6, 3:7] = 5  # a 4x4 square: four centre pixels tie
    ids, points = prompt_points(inst)
    assert ids.tolist() == [5]
    assert points.tolist() == [[4, 3]]  # (x, y) of the upper-left of the four
    assert prompt_points(inst)[1].tolist() == points.tolist()


def test_instance_touching_the_patch_border_and_empty_patch() -> None:
    inst = np.zeros((8, 8), dtype=np.int32)
    inst[0:3, :] = 1  # the border counts as outside: the dot is in the middle row, not on the edge
    _, points = prompt_points(inst)
    assert points[0][1] == 1
    ids, points = prompt_points(np.zeros((5, 5), dtype=np.int32))
    assert ids.shape == (0,) and points.shape == (0, 2)


def test_binary_instances_are_4_connected_components() -> None:
    mask = np.zeros((6, 6), dtype=bool)
    mask[0:2, 0:2] = True
    mask[2:4, 2:4] = True  # touches the first square only diagonally: a second instance
    assert components(mask).max() == 2


@pytest.mark.parametrize("kind", ["crag", "folder"])
def test_every_prompt_lands_inside_its_instance(kind: str, crag_like: Path, glas_like: Path) -> None:
    data = (build_dataset("crag", crag_like, "all", patch_size=64) if kind == "crag"
            else build_dataset("folder", glas_like, "all", patch_size=64))
    assert len(data) > len(data.groups)  # patches cut instances at their borders too
    seen = 0
    for i in range(len(data)):
        _, label = data[i]
        inst = ground_truth_instances(data, i, label)
        assert ((inst > 0) == (label == 1)).all()
        ids, points = prompt_points(inst)
        assert sorted(ids.tolist()) == sorted(set(np.unique(inst).tolist()) - {0})
        for i_id, (x, y) in zip(ids, points, strict=True):
            assert inst[y, x] == i_id
            seen += 1
    assert seen >= 10


def test_crag_instances_are_the_mask_ids(crag_like: Path) -> None:
    data = build_dataset("crag", crag_like, "test", patch_size=128)  # one padded patch per image
    ids = data.instances(0)
    assert ids is not None and ids.dtype == np.int32 and ids.shape == (128, 128)
    assert set(np.unique(ids).tolist()) == {0, 1, 2, 3, 4}
    assert (ids[96:, :] == 0).all() and (ids[:, 96:] == 0).all()  # padding (images are 96 px)
    assert data.has_instance_ids


def test_binary_folder_has_no_instance_ids(glas_like: Path) -> None:
    data = build_dataset("folder", glas_like, "all", patch_size=64)
    assert not data.has_instance_ids and data.instances(0) is None


def test_instance_iou_and_best_match() -> None:
    inst = np.zeros((4, 4), dtype=np.int32)
    inst[0:2, 0:2] = 1
    inst[2:4, 2:4] = 2
    own = np.stack([inst == 1, np.ones((4, 4), dtype=bool)])
    assert instance_iou(inst, np.array([1, 2]), own).tolist() == pytest.approx([1.0, 4 / 16])
    assert best_match_iou(inst, own).tolist() == pytest.approx([1.0, 4 / 16])
    assert best_match_iou(inst, np.zeros((0, 4, 4), dtype=bool)).tolist() == [0.0, 0.0]
