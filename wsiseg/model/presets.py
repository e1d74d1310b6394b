"""Plain registries of builder functions for the two encoders, and named whole-model presets.

Encoder builders take the working input size ``S`` (pixels, a multiple of 16) and return a freshly
initialised module whose ``forward`` maps ``(B, 3, S, S)`` to ``(B, C, S/16, S/16)``. SAM builders take
``neck`` (keep SAM's own neck: "Fine-tuned SAM"); pathology builders take ``pos_grid`` (the stored position
table's grid, None = the working grid) and ``input_norm`` (see :class:`PathologyEncoder`).
Full-size presets follow segment-anything's ``build_sam_vit_{b,l,h}`` and HIPT's ``vit_small`` exactly;
the ``*_tiny`` presets are for tests and the CPU demo (random weights, a forward well under a second), the
``*_mini`` ones (twice as deep) for training from scratch on a CPU (``pipelines/glas-cpu.yaml``).
Pathology foundation models (UNI, UNI2-h, Virchow2, H-optimus-0/1, Prov-GigaPath and their ``*_tiny``
variants) are Fp presets too (:data:`~wsiseg.model.foundation_specs.FOUNDATION_SPECS`), built by
:func:`build_pathology_encoder` as :class:`~wsiseg.model.foundation_encoder.FoundationEncoder`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wsiseg.errors import ConfigError
from wsiseg.model.foundation_encoder import FoundationEncoder, TokenGrid
from wsiseg.model.foundation_specs import FOUNDATION_SPECS
from wsiseg.model.pathology_encoder import PathologyEncoder
from wsiseg.model.preprocess import IMAGENET_MEAN, IMAGENET_STD
from wsiseg.model.sam_encoder import SamImageEncoder

PATCH_SIZE = 16
#: The grid of HIPT's stored position table (224 px pretraining / 16 px patches).
HIPT_POS_GRID = 14
InputNorm = tuple[Sequence[float], Sequence[float]]
#: An Fp module: HIPT's ViT or a foundation model; both map ``(B, 3, S, S)`` to ``(B, C, S/16, S/16)``.
FpEncoder = PathologyEncoder | FoundationEncoder


def check_input_size(input_size: int) -> int:
    """Return ``input_size`` if it is a positive multiple of the 16-pixel patch, else raise ConfigError."""
    if not isinstance(input_size, int) or input_size < 2 * PATCH_SIZE or input_size % PATCH_SIZE:
        raise ConfigError(
            f"model input size must be a multiple of {PATCH_SIZE} and >= 32, got {input_size!r}")
    return input_size


def sam_vit_b(input_size: int = 1024, neck: bool = False) -> SamImageEncoder:
    """SAM ViT-B (embed 768, depth 12, 12 heads, global attention in blocks 2, 5, 8, 11)."""
    return SamImageEncoder(img_size=check_input_size(input_size), embed_dim=768, depth=12, num_heads=12,
                           global_attn_indexes=(2, 5, 8, 11), window_size=14, neck=neck)


def sam_vit_l(input_size: int = 1024, neck: bool = False) -> SamImageEncoder:
    """SAM ViT-L (embed 1024, depth 24, 16 heads, global attention in blocks 5, 11, 17, 23)."""
    return SamImageEncoder(img_size=check_input_size(input_size), embed_dim=1024, depth=24, num_heads=16,
                           global_attn_indexes=(5, 11, 17, 23), window_size=14, neck=neck)


def sam_vit_h(input_size: int = 1024, neck: bool = False) -> SamImageEncoder:
    """SAM ViT-H (embed 1280, depth 32, 16 heads, global attention in blocks 7, 15, 23, 31)."""
    return SamImageEncoder(img_size=check_input_size(input_size), embed_dim=1280, depth=32, num_heads=16,
                           global_attn_indexes=(7, 15, 23, 31), window_size=14, neck=neck)


def sam_tiny(input_size: int = 256, neck: bool = False) -> SamImageEncoder:
    """A 2-block, 64-wide SAM-style encoder (window 4, block 1 global) for tests and CPU demos."""
    return SamImageEncoder(img_size=check_input_size(input_size), embed_dim=64, depth=2, num_heads=2,
                           global_attn_indexes=(1,), window_size=4, neck=neck)


def sam_mini(input_size: int = 256, neck: bool = False) -> SamImageEncoder:
    """A 4-block, 96-wide SAM-style encoder (window 8, blocks 1 and 3 global) for training from scratch on a
    CPU: on GlaS it learns more per epoch than ``sam_tiny`` at ~1.5x the step time (docs/training.md)."""
    return SamImageEncoder(img_size=check_input_size(input_size), embed_dim=96, depth=4, num_heads=3,
                           global_attn_indexes=(1, 3), window_size=8, neck=neck)


def hipt_vit_s(input_size: int = 1024, pos_grid: int | None = None,
               input_norm: InputNorm | None = None) -> PathologyEncoder:
    """HIPT's first-stage ViT-S/16 (embed 384, depth 12, 6 heads, mlp ratio 4, qkv bias, CLS token)."""
    return PathologyEncoder(img_size=check_input_size(input_size), embed_dim=384, depth=12, num_heads=6,
                            pos_grid=pos_grid, input_norm=input_norm)


def hipt_tiny(input_size: int = 256, pos_grid: int | None = None,
              input_norm: InputNorm | None = None) -> PathologyEncoder:
    """A 2-block, 48-wide ViT/16 with CLS token for tests and CPU demos."""
    return PathologyEncoder(img_size=check_input_size(input_size), embed_dim=48, depth=2, num_heads=2,
                            pos_grid=pos_grid, input_norm=input_norm)


def hipt_mini(input_size: int = 256, pos_grid: int | None = None,
              input_norm: InputNorm | None = None) -> PathologyEncoder:
    """A 4-block, 64-wide ViT/16 with CLS token, the pathology-encoder half of the ``mini`` preset."""
    return PathologyEncoder(img_size=check_input_size(input_size), embed_dim=64, depth=4, num_heads=2,
                            pos_grid=pos_grid, input_norm=input_norm)


#: name -> builder of the SAM image encoder Fs: ``builder(input_size, neck)``
SAM_ENCODERS: dict[str, Callable[[int, bool], SamImageEncoder]] = {
    "sam_vit_b": sam_vit_b,
    "sam_vit_l": sam_vit_l,
    "sam_vit_h": sam_vit_h,
    "sam_tiny": sam_tiny,
    "sam_mini": sam_mini,
}

#: name -> builder of the pathology encoder Fp: ``builder(input_size, pos_grid, input_norm)``
PATHOLOGY_ENCODERS: dict[str, Callable[[int, int | None, InputNorm | None], PathologyEncoder]] = {
    "hipt_vit_s": hipt_vit_s,
    "hipt_tiny": hipt_tiny,
    "hipt_mini": hipt_mini,
}

@dataclass(frozen=True)
class ModelPreset:
    """A named combination of encoder presets and input size (pixels)."""

    sam: str | None
    hipt: str | None
    input_size: int


#: whole-model presets: the paper's model, its ablations, the tiny test/demo model, the mini CPU-training one
MODEL_PRESETS: dict[str, ModelPreset] = {
    "sam_path_vit_b": ModelPreset("sam_vit_b", "hipt_vit_s", 1024),
    "sam_path_vit_l": ModelPreset("sam_vit_l", "hipt_vit_s", 1024),
    "sam_path_vit_h": ModelPreset("sam_vit_h", "hipt_vit_s", 1024),
    "sam_vit_b_only": ModelPreset("sam_vit_b", None, 1024),
    "hipt_only": ModelPreset(None, "hipt_vit_s", 1024),
    "tiny": ModelPreset("sam_tiny", "hipt_tiny", 256),
    "tiny_sam_only": ModelPreset("sam_tiny", None, 256),
    "tiny_hipt_only": ModelPreset(None, "hipt_tiny", 256),
    "mini": ModelPreset("sam_mini", "hipt_mini", 256),
}


def build_sam_encoder(name: str, input_size: int, neck: bool = False) -> SamImageEncoder:
    """Build the SAM encoder preset ``name`` at ``input_size``; unknown names raise ConfigError."""
    if name not in SAM_ENCODERS:
        raise ConfigError(f"unknown SAM encoder preset {name!r}; known: {', '.join(SAM_ENCODERS)}")
    return SAM_ENCODERS[name](input_size, neck)


def pathology_encoder_names() -> tuple[str, ...]:
    """Every Fp preset name: HIPT's and the foundation models' (with their tiny variants)."""
    return (*PATHOLOGY_ENCODERS, *FOUNDATION_SPECS)


def is_foundation_encoder(name: str | None) -> bool:
    """Whether ``name`` is a pathology foundation model preset (not HIPT's ViT)."""
    return name in FOUNDATION_SPECS


def has_token_grid_choice(name: str | None) -> bool:
    """Whether the Fp preset ``name`` needs a :class:`TokenGrid` choice: a patch-14 foundation model."""
    return name in FOUNDATION_SPECS and FOUNDATION_SPECS[name].patch != PATCH_SIZE


def build_pathology_encoder(name: str, input_size: int, pos_grid: int | None = None,
                            input_norm: InputNorm | None = None,
                            token_grid: TokenGrid = TokenGrid.RESIZE_INPUT) -> FpEncoder:
    """Build the pathology encoder preset ``name`` at ``input_size``; unknown names raise ConfigError.

    HIPT presets take ``pos_grid``/``input_norm`` (see :class:`PathologyEncoder`); foundation models take
    ``input_norm`` (default ImageNet: the model input's) and ``token_grid`` and ignore ``pos_grid`` (timm
    resamples their stored table itself)."""
    if name in FOUNDATION_SPECS:
        return FoundationEncoder(FOUNDATION_SPECS[name], check_input_size(input_size),
                                 input_norm=input_norm or (IMAGENET_MEAN, IMAGENET_STD),
                                 token_grid=token_grid)
    if name not in PATHOLOGY_ENCODERS:
        raise ConfigError(
            f"unknown pathology encoder preset {name!r}; known: {', '.join(pathology_encoder_names())}")
    return PATHOLOGY_ENCODERS[name](input_size, pos_grid, input_norm)
