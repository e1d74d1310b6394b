"""Ground-truth instances of a patch and the one dot prompt per instance that vanilla SAM is given.

Instances: the instance ids of masks that hold them (CRAG, :meth:`PatchDataset.instances`); for binary
masks (GlaS through the ``folder`` data set) the 4-connected components of the object class (class 1) of
the patch's label. The prompt of an instance is its pixel farthest from the instance's border (Euclidean
distance transform; pixels outside the patch count as outside the instance): unlike a centroid it always
lies inside the instance, also for curved (C-shaped) glands. Ties go to the first pixel in row-major order
(smallest y, then smallest x), so prompts are deterministic.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from wsiseg.errors import DatasetError
from wsiseg.train.datasets import PatchDataset

#: 4-connectivity (pixels sharing an edge)
FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)

#: class index of the object (gland) class in the two-class data sets the baselines run on
OBJECT_CLASS = 1


def check_binary(dataset: PatchDataset, method: str) -> None:
    """Raise :class:`DatasetError` unless ``dataset`` has two classes: background (0) and one object class.

    Vanilla SAM segments objects but cannot assign classes (the paper's footnote on BCSS), so its masks
    can only be scored as the one object class of a two-class data set.
    """
    names = dataset.classes.names
    if len(names) != 2:
        raise DatasetError(
            f"{method} needs a data set with two classes (background and one object class, e.g. crag or a "
            f"GlaS folder); the {dataset.name} data set has {len(names)} ({', '.join(names)}) and vanilla "
            "SAM cannot assign classes")


def components(mask: np.ndarray) -> np.ndarray:
    """4-connected components of a boolean mask as int32 ids 1..n (0 elsewhere), in row-major order."""
    ids, _ = ndimage.label(mask, structure=FOUR_CONNECTED)
    return np.asarray(ids, dtype=np.int32)


def ground_truth_instances(dataset: PatchDataset, index: int, label: np.ndarray) -> np.ndarray:
    """Instance ids ``(P, P)`` int32 of patch ``index`` (0 = no instance); ``label`` is its class label.

    CRAG-like data sets give their instance ids; otherwise the 4-connected components of the object class.
    """
    ids = dataset.instances(index)
    if ids is not None:
        return ids
    return components(label == OBJECT_CLASS)


def prompt_points(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One dot per instance: ``(ids (n,) int, points (n, 2) int (x, y))``, ids ascending.

    The point is the instance pixel with the largest Euclidean distance to the nearest pixel outside the
    instance (the patch's outside counts as outside); ties go to the first such pixel in row-major order.
    It always lies inside the instance (its distance is >= 1, that of every other pixel 0).
    """
    ids: list[int] = []
    points: list[tuple[int, int]] = []
    slices = ndimage.find_objects(instances)
    for i, box in enumerate(slices, start=1):
        if box is None:
            continue
        inside = np.pad(instances[box] == i, 1)
        dist = ndimage.distance_transform_edt(inside)
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)  # first maximum in row-major order
        ids.append(i)
        points.append((int(x) - 1 + box[1].start, int(y) - 1 + box[0].start))
    return np.asarray(ids, dtype=np.int64), np.asarray(points, dtype=np.int64).reshape(-1, 2)


def instance_iou(instances: np.ndarray, ids: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """IoU of ``masks[j]`` (bool (n, H, W)) with ground-truth instance ``ids[j]``, as float64 (n,)."""
    out = np.zeros(len(ids), dtype=np.float64)
    for j, (i, m) in enumerate(zip(ids, masks, strict=True)):
        gt = instances == i
        union = int(np.count_nonzero(gt | m))
        out[j] = np.count_nonzero(gt & m) / union if union else 0.0
    return out


def best_match_iou(instances: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """For every ground-truth instance (ids ascending), the best IoU any of ``masks`` (bool (m, H, W))
    reaches with it; 0 when there are no masks. float64 (n,)."""
    n = int(instances.max(initial=0))
    present = np.bincount(instances.ravel(), minlength=n + 1)
    ids = np.nonzero(present[1:])[0] + 1
    if len(ids) == 0:
        return np.zeros(0, dtype=np.float64)
    best = np.zeros(n + 1, dtype=np.float64)
    for m in masks:
        inter = np.bincount(instances[m], minlength=n + 1)
        union = present + int(np.count_nonzero(m)) - inter
        iou = np.divide(inter, union, out=np.zeros(n + 1), where=union > 0)
        np.maximum(best, iou, out=best)
    return best[ids]
