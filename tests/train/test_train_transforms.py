"""Augmentations draw with the reference code's probabilities (albumentations, REFERENCE section 9)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from wsiseg.train.transforms import (
    Augment,
    AugmentConfig,
    augment_features,
    augment_image,
    crop_box,
    sample_generator,
)

N = 4000


def _marked(size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose pixels are all different, and a label equal to its first channel's index grid."""
    idx = torch.arange(size * size, dtype=torch.float32).reshape(size, size)
    return torch.stack([idx / (size * size)] * 3), idx.long()


def _geometry(label: torch.Tensor, out: torch.Tensor) -> str:
    """Which flip/rotation maps ``label`` to ``out``."""
    for k in range(4):
        for name, dims in (("none", None), ("h", (-1,)), ("v", (-2,)), ("hv", (-2, -1))):
            x = label if dims is None else label.flip(dims)
            if torch.equal(torch.rot90(x, k, (-2, -1)), out):
                return f"{name}/{k}"
    raise AssertionError("not a flip/rotation")


def test_flip_and_rot90_probabilities() -> None:
    """Flip p 0.75 (h, v or both, 1/3 each), then RandomRotate90 p 0.5 with k uniform in 0..3: the 16
    (flip, k) outcomes have known probabilities. (Flips and rotations give only 8 distinct results, so
    the draws are counted by recording them, not by looking at the output.)"""
    cfg = AugmentConfig(augments=frozenset({Augment.FLIP, Augment.ROT90}))
    image, label = _marked()
    counts: Counter[str] = Counter()
    for i in range(N):
        gen = sample_generator(0, 0, i)
        # replay the generator's draws exactly as _flip_rot makes them
        replay = torch.Generator().manual_seed(gen.initial_seed())
        flip = "none"
        if float(torch.rand((), generator=replay)) < 0.75:
            flip = ["h", "v", "hv"][int(torch.randint(0, 3, (), generator=replay))]
        k = 0
        if float(torch.rand((), generator=replay)) < 0.5:
            k = int(torch.randint(0, 4, (), generator=replay))
        out_img, out_lab = augment_image(image, label, cfg, gen)
        assert _geometry(label, out_lab) in {f"{flip}/{k}"} | _equivalent(flip, k)
        assert torch.equal(out_img[0], out_lab.float() / 64)  # image and label move together
        counts[flip] += 1
        counts[f"k{k}"] += 1
    p_flip = {"none": 0.25, "h": 0.25, "v": 0.25, "hv": 0.25}
    p_k = {"k0": 0.5 + 0.5 / 4, "k1": 0.125, "k2": 0.125, "k3": 0.125}
    for key, p in {**p_flip, **p_k}.items():
        sd = (p * (1 - p) / N) ** 0.5
        assert abs(counts[key] / N - p) < 4 * sd, (key, counts[key] / N, p)


def _equivalent(flip: str, k: int) -> set[str]:
    """Other (flip, k) names of the same geometric result (e.g. both flips = a half turn)."""
    ref = torch.arange(16).reshape(4, 4)
    dims = {"none": None, "h": (-1,), "v": (-2,), "hv": (-2, -1)}[flip]
    out = torch.rot90(ref if dims is None else ref.flip(dims), k, (-2, -1))
    return {_geometry(ref, out)}


def test_color_jitter_probability_ranges_and_random_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """ColorJitter with p 0.5; brightness, contrast, saturation factors in [0.9, 1.1], hue in [-0.1, 0.1];
    the four adjustments in a random order (every order occurs)."""
    import wsiseg.train.transforms as tr

    calls: list[tuple[str, float]] = []

    def recorder(name: str):  # type: ignore[no-untyped-def]
        def op(image: torch.Tensor, factor: float) -> torch.Tensor:
            calls.append((name, factor))
            return image
        return op

    for name in ("adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue"):
        monkeypatch.setattr(tr.TF, name, recorder(name))
    cfg = AugmentConfig(augments=frozenset({Augment.COLOR_JITTER}))
    image, label = torch.rand(3, 6, 6), torch.zeros(6, 6, dtype=torch.long)
    applied, orders = 0, set()
    for i in range(N):
        calls.clear()
        augment_image(image, label, cfg, sample_generator(1, 0, i))
        if calls:
            applied += 1
            assert sorted(n for n, _ in calls) == ["adjust_brightness", "adjust_contrast", "adjust_hue",
                                                   "adjust_saturation"]
            orders.add(tuple(n for n, _ in calls))
            for name, factor in calls:
                lo, hi = (-0.1, 0.1) if name == "adjust_hue" else (0.9, 1.1)
                assert lo <= factor <= hi, (name, factor)
    assert abs(applied / N - 0.5) < 4 * (0.25 / N) ** 0.5
    assert len(orders) == 24


def test_resized_crop_scale_and_aspect() -> None:
    """RandomResizedCrop: area 0.08-1 of the image, aspect 3/4-4/3, placed inside it."""
    cfg = AugmentConfig()
    areas = []
    for i in range(N):
        top, left, h, w = crop_box(300, 200, cfg, sample_generator(2, 0, i))
        assert top >= 0 and top + h <= 300 and left >= 0 and left + w <= 200
        areas.append(h * w / (300 * 200))
        if h * w < 300 * 200:  # not the fallback
            assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
    assert min(areas) >= 0.075 and max(areas) <= 1.0
    assert any(a < 0.12 for a in areas) and any(a > 0.8 for a in areas)  # the whole range is drawn


def test_crop_of_a_non_square_source_to_the_output_size() -> None:
    """CRAG training: the crop is taken from the image as it is and resized to the output size."""
    image, label = torch.rand(3, 48, 40), torch.randint(0, 2, (48, 40))
    out_image, out_label = augment_image(image, label, AugmentConfig(), sample_generator(0, 0, 0), 96)
    assert out_image.shape == (3, 96, 96) and out_label.shape == (96, 96)
    assert set(out_label.unique().tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="needs an output size"):
        augment_image(image, label, AugmentConfig(), sample_generator(0, 0, 0))


def test_feature_mode_flips_and_rotates_features_and_labels_together() -> None:
    cfg = AugmentConfig()
    feats = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    label = torch.arange(16).reshape(4, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)  # 8 x 8
    seen = set()
    for i in range(200):
        f, lab = augment_features(feats, label, cfg, sample_generator(3, 0, i))
        g = _geometry(feats[0].long(), f[0].long())
        assert _geometry(label[::2, ::2], lab[::2, ::2]) == g
        seen.add(g)
    assert len(seen) == 8  # all eight symmetries of the square occur
