"""The paper's post-processing of vanilla SAM's output, and turning instance masks into a class label.

"Vanilla SAM with post-processing" (SAM-Path paper, section 3.2): "filtering out from the vanilla SAM
output any instance occupying more than half of the image; this is because SAM occasionally erroneously
segments the entire image as a single instance". The image is the patch SAM was given; a mask of exactly
half of it is kept.
"""

from __future__ import annotations

import numpy as np

#: a predicted instance covering more than this share of the image is dropped
MAX_IMAGE_FRACTION = 0.5


def oversized(masks: np.ndarray, max_fraction: float = MAX_IMAGE_FRACTION) -> np.ndarray:
    """Bool ``(n,)``: which ``masks`` (bool ``(n, H, W)``) cover more than ``max_fraction`` of the image."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be (n, H, W), got shape {masks.shape}")
    area = masks.reshape(len(masks), masks.shape[1] * masks.shape[2]).sum(axis=1)
    limit = max_fraction * masks.shape[1] * masks.shape[2]
    return np.asarray(area > limit, dtype=bool)


def drop_oversized(masks: np.ndarray, max_fraction: float = MAX_IMAGE_FRACTION) -> tuple[np.ndarray, int]:
    """``(kept masks, number dropped)``: the paper's post-processing rule."""
    drop = oversized(masks, max_fraction)
    return masks[~drop], int(drop.sum())


def union_label(masks: np.ndarray, shape: tuple[int, int], object_class: int = 1) -> np.ndarray:
    """uint8 ``shape`` label: ``object_class`` where any mask is set, 0 (background) elsewhere.

    Vanilla SAM's masks carry no class; as in the paper, every segmented object counts as a gland.
    """
    label = np.zeros(shape, dtype=np.uint8)
    if len(masks):
        label[np.any(masks, axis=0)] = object_class
    return label
