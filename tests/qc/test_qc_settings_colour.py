"""QC settings (YAML over documented defaults, checked once) and the ink colour model (mixtures, fitting,
the packaged model's evidence on measured ink and H&E colours)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import ndimage

from wsiseg.errors import ConfigError
from wsiseg.qc import InkColourModel, QCSettings
from wsiseg.qc.colour import INKS, GaussianMixture, colour_features, optical_density
from wsiseg.qc.settings import DEFAULT_SETTINGS
from wsiseg.synthetic.artifacts import INK_COLOURS


def test_default_yaml_documents_exactly_the_defaults() -> None:
    documented = yaml.safe_load(DEFAULT_SETTINGS.read_text())
    assert QCSettings.from_dict(documented) == QCSettings()
    assert documented == dataclasses.asdict(QCSettings())  # every default is documented, nothing else


def test_overrides_keep_the_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "qc.yaml"
    path.write_text("pen:\n  enabled: false\nblur:\n  max_ratio: 0.7\n")
    settings = QCSettings.load(path)
    assert not settings.pen.enabled and settings.blur.max_ratio == 0.7
    assert settings.tissue == QCSettings().tissue and settings.pen.margin_um == QCSettings().pen.margin_um


@pytest.mark.parametrize(("text", "message"), [
    ("pen:\n  colour: red\n", "unknown setting pen.colour"),
    ("blur: 3\n", "blur must be a mapping"),
    ("pen:\n  enabled: 1\n", "pen.enabled must be true or false"),
    ("blur:\n  max_ratio: high\n", "blur.max_ratio must be a number"),
    ("blur:\n  max_ratio: 1.5\n", "blur.max_ratio must be in 0..1"),
    ("tissue:\n  mpp: -8\n", "tissue.mpp must be positive"),
    ("pen: [\n", "not valid YAML"),
])
def test_bad_settings_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "qc.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        QCSettings.load(path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        QCSettings.load(tmp_path / "missing.yaml")


def test_mixture_fit_recovers_known_components() -> None:
    rng = np.random.default_rng(0)
    means = np.array([[0.1, 0.4, 0.2], [0.5, 0.2, -0.3]])
    x = np.concatenate([rng.normal(means[0], 0.02, (3000, 3)), rng.normal(means[1], 0.03, (1000, 3))])
    fitted = GaussianMixture.fit(x, 2, seed=1)
    order = np.argsort(fitted.means[:, 0])
    assert np.allclose(fitted.means[order], means, atol=0.005)
    assert np.allclose(fitted.weights[order], [0.75, 0.25], atol=0.01)
    covariances = np.stack([np.eye(3) * 0.02**2, np.eye(3) * 0.03**2])
    truth = GaussianMixture(np.array([0.75, 0.25]), means, covariances)
    # as likely as the truth up to the covariance regularisation (1e-4 on variances of 4e-4 and 9e-4)
    assert abs(fitted.log_pdf(x).mean() - truth.log_pdf(x).mean()) < 0.05
    with pytest.raises(ConfigError, match="too few"):
        GaussianMixture.fit(x[:5], 2)


def test_packaged_model_loads_round_trips_and_says_what_it_was_fitted_on(tmp_path: Path) -> None:
    model = InkColourModel.load()
    assert set(model.provenance) >= {"ink", "tissue", "held_out", "script"}
    path = tmp_path / "model.json"
    path.write_text(model.to_json())
    again = InkColourModel.load(path)
    x = np.random.default_rng(0).uniform([0, 0, -1], [1, 1, 0.5], (500, 3))
    assert np.array_equal(again.log_ratios(x), model.log_ratios(x))
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not a wsiseg colour model"):
        InkColourModel.load(path)


def test_evidence_for_measured_inks_and_against_h_and_e() -> None:
    """Pure ink of every measured colour is strong evidence of ink (it can seed an ink region); the textbook
    hematoxylin, eosin and their mix never are (the colour model alone, before any spatial decision; pure
    hematoxylin leans towards the blue/green inks over tissue, which is why a region needs strong evidence:
    at a total OD of 0.3 pure hematoxylin reaches 5.0 for blue ink, the threshold itself; real tissue is
    never hematoxylin without eosin)."""
    model, strong = InkColourModel.load(), QCSettings().pen.strong_log_ratio
    for name, colour in INK_COLOURS.items():
        od = np.asarray(colour.direction, np.float32) * np.float32(np.mean(colour.density))
        ratios = model.log_ratios(colour_features(od[None])[0])[0]
        assert ratios.max() > strong, (name, ratios)
    stains = {"hematoxylin": (0.65, 0.70, 0.29), "eosin": (0.07, 0.99, 0.11), "h&e": (0.36, 0.85, 0.20)}
    for name, vector in stains.items():
        for density in (0.5, 0.8, 1.5):
            od = np.asarray(vector, np.float32) / np.linalg.norm(vector) * np.float32(density)
            ratios = model.log_ratios(colour_features(od[None])[0])[0]
            assert ratios.max() < strong, (name, density, dict(zip(INKS, ratios, strict=True)))


def test_optical_density_of_white_and_black() -> None:
    od = optical_density(np.array([[255, 255, 255], [0, 0, 0]], np.uint8))
    assert np.allclose(od[0], 0) and np.allclose(od[1], np.log10(255))


def test_focus_grid_measures_each_block_once_and_maps_it_onto_other_grids() -> None:
    """Blocks are owned by one tile each (the last column/row of tiles holds the rest of its tiles), a blurred
    tile marks exactly its owned blocks, and ``mask`` maps blocks onto coarser and finer pixel grids."""
    from wsiseg.qc import FocusGrid, block_size
    from wsiseg.qc.settings import BlurSettings

    step, tile = 224, 256
    block = block_size(step, 0.5, 32.0)
    assert step % block == 0 and block % 4 == 0
    grid = FocusGrid(block, step, tile, 3, 2, BlurSettings())
    noise = np.random.default_rng(0).normal(size=(tile, tile))

    def texture(sigma: float) -> np.ndarray:  # a random texture blurred by sigma px, contrast restored
        field = ndimage.gaussian_filter(noise, sigma)
        grey = 130 + 40 * field / field.std()
        return np.repeat(grey.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)

    sharp, smooth = texture(0.7), texture(5.0)
    for row in range(2):
        for col in range(3):
            grid.measure(col, row, smooth if (col, row) == (2, 1) else sharp)
    per_tile = step // block
    expected = {(bx, by) for bx in range(2 * per_tile, 2 * per_tile + tile // block)
                for by in range(per_tile, per_tile + tile // block)}
    assert {tuple(b) for b in grid.blurred} == expected
    again = FocusGrid(block, step, tile, 3, 2, BlurSettings())
    again.restore(grid.blurred)
    assert again.blurred == grid.blurred
    width, height = 2 * step + tile, step + tile
    fine = grid.mask(0, height, 0, width, 1.0)
    span = tile // block * block  # the last tile's whole blocks (its last tile % block px: no block)
    assert fine[step:step + span, 2 * step:2 * step + span].all() and fine.sum() == span**2
    coarse = grid.mask(0, height // 8, 0, width // 8, 8.0)  # a grid of 8 analysis pixels per pixel
    assert np.array_equal(coarse, fine[4::8, 4::8][:height // 8, :width // 8])
