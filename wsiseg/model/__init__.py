"""SAM-Path: the segmentation model (knows no slides).

Components (one module each): :mod:`~wsiseg.model.sam_encoder` (Fs),
:mod:`~wsiseg.model.pathology_encoder` (Fp: HIPT) or :mod:`~wsiseg.model.foundation_encoder` (Fp: a
pathology foundation model through timm, :mod:`~wsiseg.model.foundation_specs`),
:mod:`~wsiseg.model.reduction` (R), :mod:`~wsiseg.model.class_decoder` (class prompts + SAM's mask
decoder), composed by :class:`SamPath`. Presets: :mod:`~wsiseg.model.presets`. Weights:
:mod:`~wsiseg.model.official` (SAM/HIPT/foundation-model files in), :mod:`~wsiseg.model.checkpoint`
(``.wsiseg`` in/out).
Inference: :class:`Predictor` / :func:`load_model`.
"""

from __future__ import annotations

from wsiseg.model.checkpoint import (
    CheckpointData,
    build_from_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from wsiseg.model.foundation_encoder import FoundationEncoder, TokenGrid
from wsiseg.model.foundation_specs import FOUNDATION_SPECS, FoundationSpec
from wsiseg.model.official import load_hipt_weights, load_pathology_weights, load_sam_weights
from wsiseg.model.predictor import Precision, SamPathPredictor, load_model, resolve_device
from wsiseg.model.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_model_input
from wsiseg.model.presets import MODEL_PRESETS, PATHOLOGY_ENCODERS, SAM_ENCODERS
from wsiseg.model.sam_path import ModelConfig, ModelLayout, SamPath, Variant, logits_to_probs
from wsiseg.predictor import Predictor

__all__ = [
    "FOUNDATION_SPECS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_PRESETS",
    "PATHOLOGY_ENCODERS",
    "SAM_ENCODERS",
    "CheckpointData",
    "FoundationEncoder",
    "FoundationSpec",
    "ModelConfig",
    "ModelLayout",
    "Precision",
    "Predictor",
    "SamPath",
    "SamPathPredictor",
    "TokenGrid",
    "Variant",
    "build_from_checkpoint",
    "load_checkpoint",
    "load_hipt_weights",
    "load_model",
    "load_pathology_weights",
    "load_sam_weights",
    "logits_to_probs",
    "read_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "to_model_input",
]
