"""Pixel colour as stain physics sees it, and the measured colour model that tells pen ink from H&E.

Optical density (OD, Beer-Lambert): ``od_c = log10(255 / I_c)`` per channel. Diluting a dye scales its OD
in every channel alike, so the *chromaticity* ``od / sum(od)`` is a property of the dye, not of how much of
it there is, and the *total* ``sum(od)`` says how much there is. The colour features of a pixel are
``(c_red, c_blue, log10(total))`` (``c_green = 1 - c_red - c_blue``): eosin and hematoxylin span one
family of chromaticities, green, blue and black inks lie far from it, and red ink lies beside eosin but
with more blue absorbed (``c_blue`` ~0.45 against ~0.2-0.37) and, at its core, far denser.

:class:`InkColourModel` holds one Gaussian mixture per class (``tissue`` and the inks ``red``, ``green``,
``black``, ``blue``) fitted to measured pixels (``wsiseg/qc/ink_colours.json``: what it was fitted on is
recorded in its ``provenance``; ``benchmarks/qc_colour_model.py`` rebuilds it).
:meth:`InkColourModel.log_ratios` gives, per pixel, ``log p(x | ink) - log p(x | tissue)`` for every ink:
the evidence the spatial stage of :mod:`wsiseg.qc.ink` decides on. Torch-free.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.errors import ConfigError

#: Names of the ink classes, in the order of :meth:`InkColourModel.log_ratios`' columns.
INKS = ("red", "green", "black", "blue")
#: The packaged model.
DEFAULT_MODEL = Path(__file__).with_name("ink_colours.json")
#: Quantisation of the features before the mixtures are evaluated (chromaticity, log10 total OD): pixels
#: falling into one cell share one evaluation, so a thumbnail costs as many evaluations as it has distinct
#: colours, not pixels. Far finer than the mixtures' spreads (> 0.01).
_STEP = np.array([0.002, 0.002, 0.005])
_LOG_TOTAL_RANGE = (-3.0, 1.0)
#: The range of cells: chromaticities 0..1, log10 total OD in _LOG_TOTAL_RANGE.
_CELL_MIN = np.array([0, 0, round(_LOG_TOTAL_RANGE[0] / _STEP[2])], np.int64)
_CELL_MAX = np.array([round(1 / _STEP[0]), round(1 / _STEP[1]), round(_LOG_TOTAL_RANGE[1] / _STEP[2])],
                     np.int64)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """OD per channel, ``log10(255 / max(I, 1))``, float32 ``(..., 3)`` of an RGB uint8 ``(..., 3)``."""
    intensity = np.maximum(rgb, 1).astype(np.float32)
    return np.asarray(np.log10(np.float32(255.0) / intensity), dtype=np.float32)


def colour_features(od: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(features (..., 3), total (...))`` of OD ``(..., 3)``: ``(c_red, c_blue, log10 total)`` and the total
    OD (0 for white)."""
    total = od.sum(axis=-1)
    safe = np.maximum(total, np.float32(1e-6))
    log_total = np.log10(np.clip(total, 10.0 ** _LOG_TOTAL_RANGE[0], 10.0 ** _LOG_TOTAL_RANGE[1]))
    features = np.stack([od[..., 0] / safe, od[..., 2] / safe, log_total], axis=-1)
    return features.astype(np.float32), total


def _logsumexp(parts: np.ndarray) -> np.ndarray:
    """``log(sum(exp(parts), axis=1))`` of ``(n, k)``, without overflow."""
    top = parts.max(axis=1)
    return np.asarray(top + np.log(np.exp(parts - top[:, None]).sum(axis=1)))


@dataclass(frozen=True)
class GaussianMixture:
    """A Gaussian mixture in the 3-D feature space: ``weights (k,)``, ``means (k, 3)``, ``covariances
    (k, 3, 3)`` (full, positive definite)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    _chol: np.ndarray = field(init=False, repr=False, compare=False)
    _whiten: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = len(self.weights)
        if self.means.shape != (k, 3) or self.covariances.shape != (k, 3, 3):
            raise ConfigError(f"a colour mixture needs weights (k,), means (k, 3) and covariances (k, 3, 3), "
                              f"got {self.weights.shape}, {self.means.shape}, {self.covariances.shape}")
        try:
            chol = np.linalg.cholesky(self.covariances)
        except np.linalg.LinAlgError:
            raise ConfigError("a colour mixture's covariance is not positive definite") from None
        object.__setattr__(self, "_chol", chol)
        # whitening x -> L^-1 (x - mu) as one 3 x 3 product per component (a solve per call costs 10x more)
        object.__setattr__(self, "_whiten", np.linalg.inv(chol))

    def component_log_pdfs(self, x: np.ndarray) -> np.ndarray:
        """``log w_j + log N(x | mu_j, C_j)`` per component, ``(n, k)`` float64, for ``x`` ``(n, 3)``."""
        x = np.asarray(x, np.float64)
        parts = np.empty((len(x), len(self.weights)))
        for j, (w, mu, chol, whiten) in enumerate(zip(self.weights, self.means, self._chol, self._whiten,
                                                      strict=True)):
            z = (x - mu) @ whiten.T
            parts[:, j] = (math.log(w) - 0.5 * (z * z).sum(axis=1) - float(np.log(np.diag(chol)).sum())
                           - 1.5 * math.log(2 * math.pi))
        return parts

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        """Log density of the mixture at ``x`` ``(n, 3)`` -> ``(n,)`` float64."""
        return _logsumexp(self.component_log_pdfs(x))

    @classmethod
    def fit(cls, x: np.ndarray, k: int, *, seed: int = 0, iterations: int = 300,
            regularisation: float = 1e-4) -> GaussianMixture:
        """Maximum-likelihood mixture of ``k`` components for samples ``x`` ``(n, 3)`` by EM, started from
        ``k`` random samples; ``regularisation`` is added to every covariance's diagonal."""
        x = np.asarray(x, np.float64)
        n = len(x)
        if n < 10 * k:
            raise ConfigError(f"{n} samples are too few to fit {k} colour components")
        rng = np.random.default_rng(seed)
        means = x[rng.choice(n, k, replace=False)]
        covariances = np.repeat((np.cov(x.T) + regularisation * np.eye(3))[None], k, axis=0)
        weights = np.full(k, 1.0 / k)
        previous = -np.inf
        for _ in range(iterations):
            parts = cls(weights, means, covariances).component_log_pdfs(x)
            total = _logsumexp(parts)
            resp = np.exp(parts - total[:, None])
            nk = resp.sum(axis=0) + 1e-12
            weights = nk / n
            means = (resp.T @ x) / nk[:, None]
            for j in range(k):
                d = x - means[j]
                covariances[j] = (resp[:, j, None] * d).T @ d / nk[j] + regularisation * np.eye(3)
            mean_ll = float(total.mean())
            if mean_ll - previous < 1e-7:
                break
            previous = mean_ll
        return cls(weights, means, covariances)

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.round(8).tolist(), "means": self.means.round(8).tolist(),
                "covariances": self.covariances.round(10).tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GaussianMixture:
        return cls(np.asarray(data["weights"], np.float64), np.asarray(data["means"], np.float64),
                   np.asarray(data["covariances"], np.float64))


@dataclass(frozen=True)
class InkColourModel:
    """Gaussian mixtures of the colour features of H&E tissue and of each ink in :data:`INKS`."""

    tissue: GaussianMixture
    inks: dict[str, GaussianMixture]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.inks) != INKS:
            raise ConfigError(f"a colour model needs the inks {', '.join(INKS)} in that order, "
                              f"got {', '.join(self.inks)}")

    def log_ratios(self, features: np.ndarray, own_tissue: GaussianMixture | None = None) -> np.ndarray:
        """``log p(x | ink) - log p(x | tissue)`` per ink, float32 ``(n, len(INKS))`` for features ``(n, 3)``;
        with ``own_tissue`` (a mixture fitted to one image's tissue) the tissue likelihood is the larger of
        the model's and that one's.

        Features are quantised (:data:`_STEP`) and each distinct cell is evaluated once."""
        cells = np.round(np.asarray(features, np.float64) / _STEP).astype(np.int64)
        cells = np.clip(cells, _CELL_MIN, _CELL_MAX)
        size = _CELL_MAX - _CELL_MIN + 1
        keys = ((cells[:, 0] - _CELL_MIN[0]) * size[1] + cells[:, 1] - _CELL_MIN[1]) * size[2] \
            + cells[:, 2] - _CELL_MIN[2]  # one int64 per cell: a 1-D unique, far faster than rows
        unique, inverse = np.unique(keys, return_inverse=True)
        c0, rest = np.divmod(unique, size[1] * size[2])
        c1, c2 = np.divmod(rest, size[2])
        centres = (np.stack([c0, c1, c2], axis=1) + _CELL_MIN) * _STEP
        tissue = self.tissue.log_pdf(centres)
        if own_tissue is not None:
            tissue = np.maximum(tissue, own_tissue.log_pdf(centres))
        ratios = np.stack([self.inks[name].log_pdf(centres) - tissue for name in INKS], axis=1)
        return ratios.astype(np.float32)[np.ravel(inverse)]

    def to_json(self) -> str:
        return json.dumps({"format": 1, "features": ["c_red", "c_blue", "log10_total_od"],
                           "provenance": self.provenance, "tissue": self.tissue.to_dict(),
                           "inks": {name: self.inks[name].to_dict() for name in INKS}}, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "colour model") -> InkColourModel:
        try:
            data = json.loads(text)
            return cls(GaussianMixture.from_dict(data["tissue"]),
                       {name: GaussianMixture.from_dict(data["inks"][name]) for name in INKS},
                       dict(data.get("provenance", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source} is not a wsiseg colour model ({exc!r})") from None

    @classmethod
    def load(cls, path: str | Path = DEFAULT_MODEL) -> InkColourModel:
        """Read a model written by :meth:`to_json` (default: the packaged one)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the colour model {path}: {exc.strerror or exc}") from None
        return cls.from_json(text, str(path))

    @classmethod
    def fit(cls, samples: dict[str, np.ndarray], components: dict[str, int], *, seed: int = 0,
            provenance: dict[str, Any] | None = None) -> InkColourModel:
        """Fit one mixture per class (``tissue`` and every ink) to its feature samples ``(n, 3)`` (see
        :func:`colour_features`), with ``components[name]`` components."""
        missing = sorted({"tissue", *INKS} - set(samples))
        if missing:
            raise ConfigError(f"colour samples missing for {', '.join(missing)}")
        mixtures = {name: GaussianMixture.fit(samples[name], components[name], seed=seed)
                    for name in ("tissue", *INKS)}
        return cls(mixtures.pop("tissue"), {name: mixtures[name] for name in INKS}, provenance or {})
