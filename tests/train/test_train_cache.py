"""Embedding cache: stored features equal the encoder output, keys follow the weights; augmentations agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wsiseg.model import ModelConfig, SamPath, to_model_input
from wsiseg.train.cache import EmbeddingCache, encoder_key
from wsiseg.train.datasets import build_dataset
from wsiseg.train.transforms import Augment, AugmentConfig, augment_features, augment_image, sample_generator


def _model(seed: int) -> SamPath:
    torch.manual_seed(seed)
    return SamPath(ModelConfig.from_preset("tiny", 2, input_size=64))


def test_cache_stores_encoder_features_and_is_keyed_by_weights(tiny_folder: Path, tmp_path: Path) -> None:
    ds = build_dataset("folder", tiny_folder, "all", patch_size=64)
    model = _model(0)
    cache = EmbeddingCache(tmp_path, model)
    assert cache.fill(ds, device=torch.device("cpu"), batch_size=4, progress=False) == 6
    assert cache.fill(ds, device=torch.device("cpu"), progress=False) == 0  # everything is cached already
    with torch.no_grad():
        want = model.encode(to_model_input(torch.from_numpy(ds[3][0][None]), 64))[0]
    got = cache.load(ds, 3)
    assert got.dtype == np.float16 and got.shape == (model.feature_channels, 4, 4)
    np.testing.assert_allclose(got.astype(np.float32), want.numpy(), rtol=2e-3, atol=2e-3)
    # other encoder weights -> another key and folder; same weights -> same key
    assert encoder_key(_model(1)) != cache.key
    assert encoder_key(_model(0)) == cache.key


def test_feature_and_label_augmentations_stay_aligned() -> None:
    # a feature grid (1, 4, 4) and a label (16, 16) that mark the same quadrant: after any flip/rot90
    # the marked feature cell must still sit over the marked label block
    feats = torch.zeros(1, 4, 4)
    feats[0, 0, 1] = 1.0
    label = torch.zeros(16, 16, dtype=torch.long)
    label[0:4, 4:8] = 1
    cfg = AugmentConfig(augments=frozenset({Augment.FLIP, Augment.ROT90}))
    seen = set()
    for i in range(40):
        f, y = augment_features(feats, label, cfg, sample_generator(0, 0, i))
        r, c = (int(v) for v in torch.nonzero(f[0])[0])
        assert (y[4 * r:4 * r + 4, 4 * c:4 * c + 4] == 1).all() and int(y.sum()) == 16
        seen.add((r, c))
    assert len(seen) >= 4  # the augmentations really vary


def test_image_augmentations_are_reproducible_and_keep_labels_valid() -> None:
    gen_img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    label = torch.randint(0, 3, (32, 32), generator=torch.Generator().manual_seed(1))
    cfg = AugmentConfig()
    a = augment_image(gen_img, label, cfg, sample_generator(3, 2, 7))
    b = augment_image(gen_img, label, cfg, sample_generator(3, 2, 7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 32, 32) and a[1].shape == (32, 32)
    assert set(a[1].unique().tolist()) <= {0, 1, 2}
    c = augment_image(gen_img, label, cfg, sample_generator(3, 3, 7))
    assert not torch.equal(a[0], c[0])
