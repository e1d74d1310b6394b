"""One model on several devices of this machine, for one slide at a time: :class:`ModelReplicas`.

Every replica is the same model (same checkpoint, same weights) built on its own device. A run over a slide
(:class:`~wsiseg.infer.run.SegmentationRun`) gives each replica its own model thread: batches are handed
to whichever replica is free and their probabilities stitched in batch order, so the output is the
single-device output (up to each device's own float arithmetic). This is how one large slide uses several
GPUs; many slides use one worker process per device instead (:mod:`wsiseg.infer.cohort.devices`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wsiseg.errors import ConfigError
from wsiseg.predictor import Predictor

#: Provenance keys that may differ between replicas (where each one runs).
_WHERE = ("device",)


class ModelReplicas:
    """Several :class:`~wsiseg.predictor.Predictor` replicas of one model; itself a Predictor (its
    ``predict`` is the first replica's) whose ``device`` names all their devices, comma-separated.

    Raises :class:`ConfigError` when the replicas are not the same model (classes, resolution, tile size,
    output stride, or provenance other than the device)."""

    def __init__(self, replicas: Sequence[Predictor]) -> None:
        if not replicas:
            raise ConfigError("model replicas need at least one model")
        first = replicas[0]
        same = {k: v for k, v in first.provenance().items() if k not in _WHERE}
        for other in replicas[1:]:
            if (other.classes.names != first.classes.names or other.mpp != first.mpp
                    or other.tile_size != first.tile_size or other.output_stride != first.output_stride
                    or {k: v for k, v in other.provenance().items() if k not in _WHERE} != same):
                raise ConfigError("model replicas must be the same model on different devices")
        self.replicas = tuple(replicas)
        self.classes, self.mpp, self.tile_size = first.classes, first.mpp, first.tile_size
        self.output_stride = first.output_stride
        self.device = ",".join(r.device for r in replicas)

    def predict(self, tiles: np.ndarray, out_size: int | None = None) -> np.ndarray:
        return self.replicas[0].predict(tiles, out_size)

    def provenance(self) -> dict[str, Any]:
        return {**self.replicas[0].provenance(), "device": self.device}


def replicas_of(model: Predictor) -> tuple[Predictor, ...]:
    """The replicas a run spreads its batches over: those of a :class:`ModelReplicas`, else the model."""
    return model.replicas if isinstance(model, ModelReplicas) else (model,)
