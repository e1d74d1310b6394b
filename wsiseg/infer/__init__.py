"""Whole-slide inference: Dask-scheduled tile reads, batched prediction, seamless blending, OME-Zarr output.

Torch-free: the model comes in as a :class:`Predictor` (``wsiseg.model.load_model`` or a reference model).
"""

from __future__ import annotations

from wsiseg.infer.batch import BatchResult, ModelSpec, segment_slides
from wsiseg.infer.blending import BlendWindow, blend_window
from wsiseg.infer.omezarr import NgffVersion, Segmentation, SegmentationWriter, open_segmentation
from wsiseg.infer.pipeline import StageTimes
from wsiseg.infer.reference_models import ColourModel, NullModel
from wsiseg.infer.segment import SegmentResult, preview_path, segment_slide
from wsiseg.infer.stitch import FinishedChunk, Layout, Stitcher
from wsiseg.predictor import Predictor

__all__ = [
    "BatchResult",
    "BlendWindow",
    "ColourModel",
    "FinishedChunk",
    "Layout",
    "ModelSpec",
    "NgffVersion",
    "NullModel",
    "Predictor",
    "SegmentResult",
    "Segmentation",
    "SegmentationWriter",
    "StageTimes",
    "Stitcher",
    "blend_window",
    "open_segmentation",
    "preview_path",
    "segment_slide",
    "segment_slides",
]
