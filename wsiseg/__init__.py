"""wsiseg: whole-slide semantic segmentation with SAM-Path.

The public Python API (imported lazily, so ``import wsiseg`` stays cheap and torch-free until a model is
needed)::

    from wsiseg import open_slide, load_model, segment_slide, export_geojson
    from wsiseg import segment_slides, ModelSpec          # many slides, locally or on a Dask cluster
    from wsiseg import TrainConfig, Trainer, build_dataset, evaluate
"""

from __future__ import annotations

import importlib
from typing import Any

from wsiseg._version import __version__
from wsiseg.classes import ClassList, TissueClass

#: public name -> module that defines it
_LAZY: dict[str, str] = {
    "open_slide": "wsiseg.slide",
    "Slide": "wsiseg.slide",
    "load_model": "wsiseg.model",
    "segment_slide": "wsiseg.infer",
    "segment_slides": "wsiseg.infer",
    "ModelSpec": "wsiseg.infer",
    "export_geojson": "wsiseg.export",
    "TrainConfig": "wsiseg.train.config",
    "Trainer": "wsiseg.train.trainer",
    "build_dataset": "wsiseg.train.datasets",
    "evaluate": "wsiseg.train.evaluate",
}

__all__ = ["ClassList", "TissueClass", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wsiseg' has no attribute {name!r}")
