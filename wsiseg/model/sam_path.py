"""SamPath: Fs (SAM encoder) + Fp (pathology encoder) -> R -> class-prompt mask decoder; its config."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsiseg.errors import ConfigError
from wsiseg.model.class_decoder import PROMPT_DIM, ClassPromptDecoder, PromptState
from wsiseg.model.foundation_encoder import TokenGrid
from wsiseg.model.preprocess import IMAGENET_MEAN, IMAGENET_STD
from wsiseg.model.presets import (
    HIPT_POS_GRID,
    MODEL_PRESETS,
    PATCH_SIZE,
    FpEncoder,
    build_pathology_encoder,
    build_sam_encoder,
    check_input_size,
    has_token_grid_choice,
    is_foundation_encoder,
    pathology_encoder_names,
)
from wsiseg.model.reduction import Reduction
from wsiseg.model.sam_encoder import SamImageEncoder


class Variant(str, enum.Enum):
    """Which encoders feed the mask decoder (the paper's Table 1 rows, and one wsiseg variant)."""

    #: Fs (pre-neck) + Fp -> R: the paper's SAM-Path
    SAM_PATH = "sam_path"
    #: Fs with SAM's own pretrained, frozen neck, no R: the paper's "Fine-tuned SAM (w.o. Fp)"
    FINETUNED_SAM = "finetuned_sam"
    #: Fp -> R: the paper's "SAM-Path w.o. Fs"
    PATHOLOGY_ONLY = "pathology_only"
    #: Fs pre-neck features -> a new R (wsiseg 0.1's "sam_only"; not in the paper)
    SAM_PRE_NECK = "sam_pre_neck"

    @classmethod
    def _missing_(cls, value: object) -> Variant | None:
        return cls.SAM_PRE_NECK if value == "sam_only" else None  # checkpoints of wsiseg 0.1

    @property
    def uses_sam(self) -> bool:
        return self is not Variant.PATHOLOGY_ONLY

    @property
    def uses_hipt(self) -> bool:
        return self in (Variant.SAM_PATH, Variant.PATHOLOGY_ONLY)


class ModelLayout(str, enum.Enum):
    """How a model computes; recorded in checkpoints (those of wsiseg 0.1 have none: ``V1``).

    ``REFERENCE``: exactly the SAM-Path reference code (REFERENCE.md section 9): the decoder has an extra
    "unlabeled" channel 0 (``k + 1`` channels, ``k + 2`` mask tokens) that never wins the argmax; Fp
    re-normalises its input to HIPT's 0.5/0.5 and interpolates its stored 14 x 14 position table on every
    forward (DINO); the model input is resized bilinearly without antialiasing.
    ``V1``: wsiseg 0.1: ``k`` channels, Fp on the ImageNet-normalised input with its table resized once
    to the working grid, antialiased shrinking.
    """

    REFERENCE = "reference"
    V1 = "v1"


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`SamPath` (stored in checkpoints).

    ``sam``/``hipt`` name the Fs/Fp presets (``hipt`` is the Fp slot: HIPT's ViT or a pathology
    foundation model such as ``"uni"``). ``num_classes`` is ``k``, the real classes; ``input_size`` the
    side (pixels) of the square model input (tiles are resized to it). ``train_encoders`` makes Fs/Fp
    trainable (frozen and kept in eval mode otherwise). ``token_grid``: how a patch-14 Fp meets the
    ``S/16`` grid (:class:`~wsiseg.model.foundation_encoder.TokenGrid`; recorded so a model runs as trained).
    """

    variant: Variant
    sam: str | None
    hipt: str | None
    num_classes: int
    input_size: int = 1024
    train_encoders: bool = False
    layout: ModelLayout = ModelLayout.REFERENCE
    token_grid: TokenGrid = TokenGrid.RESIZE_INPUT

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", Variant(self.variant))
        object.__setattr__(self, "layout", ModelLayout(self.layout))
        object.__setattr__(self, "token_grid", TokenGrid(self.token_grid))
        check_input_size(self.input_size)
        if self.hipt is not None and self.hipt not in pathology_encoder_names():
            raise ConfigError(f"unknown pathology encoder {self.hipt!r}; known: "
                              f"{', '.join(pathology_encoder_names())}")
        if is_foundation_encoder(self.hipt) and self.layout is ModelLayout.V1:
            raise ConfigError(f"the pathology encoder {self.hipt} exists only in the reference layout")
        if self.token_grid is not TokenGrid.RESIZE_INPUT and not has_token_grid_choice(self.hipt):
            raise ConfigError(f"the token grid {self.token_grid.value} applies to patch-14 pathology "
                              f"encoders (uni2_h, virchow2, h_optimus_*), not to {self.hipt}")
        if self.num_classes < 1:
            raise ConfigError(f"a model needs at least one class, got {self.num_classes}")
        needs_sam, needs_hipt = self.variant.uses_sam, self.variant.uses_hipt
        if needs_sam != (self.sam is not None) or needs_hipt != (self.hipt is not None):
            raise ConfigError(
                f"variant {self.variant.value} needs "
                f"{'a' if needs_sam else 'no'} SAM encoder and {'a' if needs_hipt else 'no'} pathology "
                f"encoder (got sam={self.sam!r}, hipt={self.hipt!r})"
            )
        if self.variant is Variant.FINETUNED_SAM and self.layout is ModelLayout.V1:
            raise ConfigError("the finetuned_sam variant exists only in the reference layout")

    @classmethod
    def from_preset(cls, name: str, num_classes: int, *, variant: Variant | str | None = None,
                    input_size: int | None = None, train_encoders: bool = False,
                    pathology_encoder: str | None = None,
                    token_grid: TokenGrid | str = TokenGrid.RESIZE_INPUT) -> ModelConfig:
        """Config of a :data:`~wsiseg.model.presets.MODEL_PRESETS` entry (reference layout); ``variant``
        drops an encoder (a preset with SAM only is "Fine-tuned SAM"); ``pathology_encoder`` replaces the
        preset's Fp (e.g. ``"uni"``), ``token_grid`` says how a patch-14 one meets the grid."""
        if name not in MODEL_PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(MODEL_PRESETS)}")
        p = MODEL_PRESETS[name]
        if pathology_encoder is not None:  # checked with the rest of the config in __post_init__
            p = dataclasses.replace(p, hipt=pathology_encoder)
        try:
            token_grid = TokenGrid(token_grid)
        except ValueError as exc:
            raise ConfigError(f"unknown token grid {token_grid!r}; known: "
                              f"{', '.join(t.value for t in TokenGrid)}") from exc
        if variant is None:
            variant = (Variant.SAM_PATH if p.sam and p.hipt else
                       Variant.FINETUNED_SAM if p.sam else Variant.PATHOLOGY_ONLY)
        try:
            variant = Variant(variant)
        except ValueError as exc:
            raise ConfigError(f"unknown variant {variant!r}; known: "
                              f"{', '.join(v.value for v in Variant)}") from exc
        if (variant.uses_sam and not p.sam) or (variant.uses_hipt and not p.hipt):
            raise ConfigError(f"preset {name} has no encoder for variant {variant.value}")
        sam = p.sam if variant.uses_sam else None
        hipt = p.hipt if variant.uses_hipt else None
        return cls(variant, sam, hipt, num_classes, input_size or p.input_size, train_encoders,
                   token_grid=token_grid)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["variant"] = self.variant.value
        d["layout"] = self.layout.value
        if has_token_grid_choice(self.hipt):  # recorded where it matters (other files stay as they were)
            d["token_grid"] = self.token_grid.value
        else:
            del d["token_grid"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """The inverse of :meth:`to_dict`; a config without ``layout`` (wsiseg 0.1) is ``V1``."""
        try:
            return cls(Variant(data["variant"]), data["sam"], data["hipt"], int(data["num_classes"]),
                       int(data["input_size"]), bool(data.get("train_encoders", False)),
                       ModelLayout(data.get("layout", ModelLayout.V1.value)),
                       TokenGrid(data.get("token_grid", TokenGrid.RESIZE_INPUT.value)))
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"malformed model config {data!r}: {exc}") from exc


class SamPath(nn.Module):
    """SAM-Path and its ablations (REFERENCE.md sections 1 and 9).

    ``forward(images (B, 3, S, S) float, ImageNet-normalised) -> (logits (B, C, S/4, S/4), iou (B, C))``
    with ``S = config.input_size`` and ``C = num_channels`` decoder channels: ``k + 1`` in the reference
    layout (channel 0 = "unlabeled", :meth:`class_logits` drops it), ``k`` in layout v1. ``encode`` is the
    frozen part (cacheable), ``decode`` the trainable one. Parameter groups: ``sam_encoder`` (Fs, with its
    neck for "Fine-tuned SAM"), ``pathology_encoder`` (Fp), ``prompt_encoder`` (frozen SAM prompt-encoder
    pieces), ``reduction`` (R; absent for "Fine-tuned SAM"), ``mask_decoder`` (class tokens, hypernetworks,
    IoU head, SAM's two-way transformer and upscaling).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        s = config.input_size
        reference = config.layout is ModelLayout.REFERENCE
        self.sam_encoder: SamImageEncoder | None = (
            build_sam_encoder(config.sam, s, neck=config.variant is Variant.FINETUNED_SAM)
            if config.sam else None)
        self.pathology_encoder: FpEncoder | None = (
            build_pathology_encoder(config.hipt, s, pos_grid=HIPT_POS_GRID if reference else None,
                                    input_norm=(IMAGENET_MEAN, IMAGENET_STD) if reference else None,
                                    token_grid=config.token_grid)
            if config.hipt else None)
        self.reduction: Reduction | None = (
            None if config.variant is Variant.FINETUNED_SAM else Reduction(self.feature_channels, PROMPT_DIM))
        self.prompt_encoder = PromptState(self.grid_size, PROMPT_DIM)
        self.mask_decoder = ClassPromptDecoder(self.num_channels)
        self.prompt_encoder.requires_grad_(False)
        for enc in self.encoders():
            enc.requires_grad_(config.train_encoders)
        #: pretrained files loaded into this model: {"sam"|"hipt": {"file": name, "sha256": hex}}
        self.base_weights: dict[str, dict[str, str]] = {}
        self.train(False)

    @property
    def num_classes(self) -> int:
        """``k``, the real classes."""
        return self.config.num_classes

    @property
    def num_channels(self) -> int:
        """Decoder output channels: ``k + 1`` (channel 0 "unlabeled") in the reference layout, else ``k``."""
        return self.num_classes + (1 if self.has_unlabeled_channel else 0)

    @property
    def has_unlabeled_channel(self) -> bool:
        return self.config.layout is ModelLayout.REFERENCE

    @property
    def input_size(self) -> int:
        """Side of the square model input, pixels."""
        return self.config.input_size

    @property
    def grid_size(self) -> int:
        """Side of the feature grid ``G = S / 16``."""
        return self.config.input_size // PATCH_SIZE

    @property
    def feature_channels(self) -> int:
        """Channels of ``encode``'s output: C_fs + C_fp (768 + 384 for ViT-B + ViT-S; 256 after the neck)."""
        return sum(enc.out_channels for enc in self.encoders())

    @property
    def antialias_input(self) -> bool:
        """Whether tiles are antialiased when shrunk to the model input (layout v1) or not (reference)."""
        return self.config.layout is ModelLayout.V1

    def encoders(self) -> list[SamImageEncoder | FpEncoder]:
        """The encoders present, in concatenation order (Fs, then Fp)."""
        return [e for e in (self.sam_encoder, self.pathology_encoder) if e is not None]

    def train(self, mode: bool = True) -> SamPath:
        """Like ``nn.Module.train``, but frozen encoders and the prompt state stay in eval mode."""
        super().train(mode)
        self.prompt_encoder.eval()
        if not self.config.train_encoders:
            for enc in self.encoders():
                enc.eval()
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` normalised images -> ``(B, C_fs + C_fp, G, G)`` concatenated encoder features.

        Runs without autograd when the encoders are frozen, so its output can be cached.
        """
        s = self.config.input_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != s or images.shape[3] != s:
            raise ValueError(f"expected images of shape (B, 3, {s}, {s}), got {tuple(images.shape)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.train_encoders):
            feats = [enc(images) for enc in self.encoders()]
        return feats[0] if len(feats) == 1 else torch.cat(feats, dim=1)

    def decode(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C_fs + C_fp, G, G)`` -> ``(logits (B, C, 4G, 4G), iou (B, C))``, ``C = num_channels``."""
        emb = features if self.reduction is None else self.reduction(features)
        logits, iou = self.mask_decoder(emb, self.prompt_encoder.dense_pe(),
                                        self.prompt_encoder.dense_prompt(emb.shape[0]))
        return logits, iou

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self.encode(images))

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The real classes' channels of decoder output ``x`` (logits ``(B, C, ...)`` or IoUs ``(B, C)``):
        ``x[:, 1:]`` in the reference layout, ``x`` in layout v1. ``(B, k, ...)``."""
        return x[:, 1:] if self.has_unlabeled_channel else x

    def class_probs(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Decoder logits ``(B, C, h, w)`` -> class probabilities ``(B, k, H, W)``: the softmax over the real
        classes' logits (channel 0 "unlabeled" left out), resized to ``size`` (see :func:`logits_to_probs`).
        Its argmax is the reference's prediction ``argmax(logits[:, 1:]) + 1`` (as a 0-based class index)."""
        return logits_to_probs(self.class_logits(logits), size)


def logits_to_probs(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Low-res logits ``(B, k, h, w)`` -> probabilities ``(B, k, H, W)``: bilinear resizing to ``size``
    (align_corners=False; antialiased when shrinking; none at the logits' own size), then a softmax over
    the k classes (float32)."""
    x = logits.float()
    if tuple(x.shape[-2:]) != tuple(size):
        shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return torch.softmax(x, dim=1)
