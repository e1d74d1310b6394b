"""Whole-slide inference: Dask-scheduled tile reads, batched prediction, seamless blending, OME-Zarr output.

Torch-free: the model comes in as a :class:`Predictor` (``wsiseg.model.load_model`` or a reference model).
The output format itself (writer and reader) is :mod:`wsiseg.io.omezarr`; :func:`open_segmentation` is
handed on here for convenience.
"""

from __future__ import annotations

from wsiseg.infer.blending import BlendWindow, blend_window
from wsiseg.infer.cohort import CohortResult, ModelSpec, segment_slides
from wsiseg.infer.memory import tame_malloc
from wsiseg.infer.options import ReadErrorPolicy, SegmentOptions
from wsiseg.infer.output import preview_path
from wsiseg.infer.pipeline import StageTimes
from wsiseg.infer.reference_models import ColourModel, NullModel, PatternModel
from wsiseg.infer.run import SegmentationRun
from wsiseg.infer.segment import RunStatus, SegmentResult, segment_slide
from wsiseg.infer.stitch import FinishedChunk, Layout, Stitcher
from wsiseg.io.omezarr import NgffVersion, Segmentation, SegmentationWriter, open_segmentation
from wsiseg.predictor import Predictor

__all__ = [
    "BlendWindow",
    "CohortResult",
    "ColourModel",
    "FinishedChunk",
    "Layout",
    "ModelSpec",
    "NgffVersion",
    "NullModel",
    "PatternModel",
    "Predictor",
    "ReadErrorPolicy",
    "RunStatus",
    "SegmentOptions",
    "SegmentResult",
    "Segmentation",
    "SegmentationRun",
    "SegmentationWriter",
    "StageTimes",
    "Stitcher",
    "blend_window",
    "open_segmentation",
    "preview_path",
    "segment_slide",
    "segment_slides",
    "tame_malloc",
]
