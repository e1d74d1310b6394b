"""vectorise_labels on numpy arrays: one polygon per 4-connected region, whatever the block size or the
way border pieces are dissolved."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from scipy import ndimage

import wsiseg.export.vectorize as vectorize
from wsiseg.export import vectorise_labels
from wsiseg.export._stitch import stitch

from .conftest import make_label_map, make_probabilities


def _regions(labels: np.ndarray, block_size: int) -> dict[tuple[int, int], tuple[int, int, float, object]]:
    probs = make_probabilities(labels)
    out: dict[tuple[int, int], tuple[int, int, float, object]] = {}
    for batch in vectorise_labels(labels, probabilities=probs, block_size=block_size):
        assert batch.probability_sum is not None
        for i in range(len(batch)):
            key = (int(batch.first_pixel[i, 0]), int(batch.first_pixel[i, 1]))
            out[key] = (int(batch.values[i]), int(batch.pixel_count[i]), float(batch.probability_sum[i]),
                        batch.geometries[i])
    return out


@pytest.mark.parametrize("dissolve", ["stitch", "buffer", "union_all"])
def test_regions_match_connected_components(monkeypatch: pytest.MonkeyPatch, dissolve: str) -> None:
    """Border pieces are joined by the numpy stitcher; buffer(0) and union_all are its fallbacks."""
    if dissolve != "stitch":
        monkeypatch.setattr(vectorize, "stitch", lambda outlines, block_size, origin: None)
    if dissolve == "union_all":
        monkeypatch.setattr(vectorize, "_BUFFER_MAX_VERTICES", 0)
    labels = make_label_map(160, 200, seed=3)
    probs = make_probabilities(labels)
    regions = _regions(labels, block_size=24)
    n_total = 0
    for value in (1, 2, 3):
        components, n = ndimage.label(labels == value)
        n_total += n
        for cid in range(1, n + 1):
            inside = components == cid
            ys, xs = np.nonzero(inside)
            first = (int(ys[0]), int(xs[0]))  # row-major first pixel
            v, count, psum, geometry = regions[first]
            assert v == value and count == int(inside.sum())
            assert psum == pytest.approx(float(probs[value - 1][inside].sum()))
            assert isinstance(geometry, shapely.Polygon) and geometry.is_valid
            assert geometry.area == count  # exact pixel edges
    assert len(regions) == n_total
    single = _regions(labels, block_size=10_000)
    assert single.keys() == regions.keys()
    for key, (_, _, _, geometry) in single.items():
        other = regions[key][3]
        assert isinstance(other, shapely.Polygon) and geometry.equals(other)
        assert len(shapely.get_coordinates(other)) == len(shapely.get_coordinates(geometry))


def test_stitch_equals_geos_union_on_pixel_noise() -> None:
    """Pinch points everywhere: the stitched union equals GEOS's and is valid (holes touch shells at
    points, shells never touch themselves)."""
    labels = np.random.default_rng(8).integers(0, 3, (120, 120)).astype(np.uint8)
    seen: list[list[object]] = []
    original = vectorize._dissolve

    def spy(outlines: list[object], block_size: int, simplified: bool, origin: tuple[int, int]) -> object:
        seen.append(list(outlines))
        return original(outlines, block_size, simplified, origin)

    vectorize._dissolve = spy  # type: ignore[assignment]
    try:
        list(vectorise_labels(labels, block_size=16))
    finally:
        vectorize._dissolve = original  # type: ignore[assignment]
    assert len(seen) > 100
    for outlines in seen:
        stitched = stitch(outlines, 16)
        assert stitched is not None and stitched.is_valid
        assert stitched.equals(shapely.union_all(outlines))


def test_values_filter_and_rejects_tiny_blocks() -> None:
    labels = make_label_map(160, 200, seed=5)[:64, :80]
    batches = list(vectorise_labels(labels, values=[2], block_size=16))
    assert all((b.values == 2).all() for b in batches)
    assert sum(len(b) for b in batches) == ndimage.label(labels == 2)[1]
    with pytest.raises(ValueError, match="block_size"):
        list(vectorise_labels(labels, block_size=1))
