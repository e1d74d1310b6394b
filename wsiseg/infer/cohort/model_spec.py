"""How a model is built where a slide runs: :class:`ModelSpec` (picklable, hashable: for cluster workers)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from wsiseg.errors import ConfigError, option
from wsiseg.predictor import Predictor

#: ``ModelSpec.checkpoint`` value selecting :class:`~wsiseg.infer.reference_models.NullModel`.
NULL_MODEL = "null"


@dataclass(frozen=True)
class ModelSpec:
    """How to build a :class:`Predictor`: picklable and hashable, so cluster workers build (and cache) it.

    ``checkpoint``: ``"null"`` (:class:`~wsiseg.infer.reference_models.NullModel`, constant output) or the
    path of a ``.wsiseg`` checkpoint (:func:`wsiseg.model.load_model`). ``device``: ``auto``, ``cpu``,
    ``cuda``, ``cuda:N`` or ``mps``, resolved where the model is built (on each worker in cluster mode).
    ``sam_checkpoint``, ``hipt_checkpoint``: the official SAM/HIPT weight files a slim checkpoint needs.
    ``mpp``, ``tile_size``: resolution (um/px) and tile side (px) of the null model, which needs both;
    ignored for checkpoints (they record their own). ``precision``: ``fp32`` (the reference's arithmetic),
    ``bf16`` or ``fp16``; ``compile``: ``torch.compile`` the model; ``lanes``: model threads per device
    (default 2 on CUDA, else 1) (all three: :class:`~wsiseg.model.SamPathPredictor`).

    Paths may be given as path-likes and are kept as strings. Raises :class:`ConfigError` for a null model
    without ``mpp`` and ``tile_size``.
    """

    checkpoint: str | os.PathLike[str]
    device: str = "auto"
    sam_checkpoint: str | os.PathLike[str] | None = None
    hipt_checkpoint: str | os.PathLike[str] | None = None
    mpp: float | None = None
    tile_size: int | None = None
    precision: str = "fp32"
    compile: bool = False
    lanes: int | None = None

    def __post_init__(self) -> None:
        for name in ("checkpoint", "sam_checkpoint", "hipt_checkpoint"):  # strings: hashable, picklable
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.fspath(value))
        if self.is_null and (self.mpp is None or self.tile_size is None):
            raise ConfigError(f"the null model needs {option('mpp')} and {option('tile_size')}")

    @property
    def is_null(self) -> bool:
        """True for the constant :class:`~wsiseg.infer.reference_models.NullModel`."""
        return self.checkpoint == NULL_MODEL

    def absolute(self) -> ModelSpec:
        """The same spec with absolute file paths (what cluster workers get)."""
        def absolute(path: str | os.PathLike[str] | None) -> str | None:
            return None if path is None else str(Path(path).absolute())

        return replace(self, checkpoint=self.checkpoint if self.is_null else str(absolute(self.checkpoint)),
                       sam_checkpoint=absolute(self.sam_checkpoint),
                       hipt_checkpoint=absolute(self.hipt_checkpoint))

    def build(self) -> Predictor:
        """Load the model (imports torch for checkpoints). Raises CheckpointError, ConfigError."""
        if self.is_null:
            from wsiseg.infer.reference_models import NullModel
            from wsiseg.synthetic import SYNTHETIC_CLASSES

            assert self.mpp is not None and self.tile_size is not None  # checked in __post_init__
            return NullModel(SYNTHETIC_CLASSES, self.mpp, self.tile_size)
        from wsiseg.model import load_model

        predictor: Predictor = load_model(self.checkpoint, device=self.device,
                                          sam_checkpoint=self.sam_checkpoint,
                                          hipt_checkpoint=self.hipt_checkpoint, precision=self.precision,
                                          compile=self.compile, lanes=self.lanes)
        return predictor
