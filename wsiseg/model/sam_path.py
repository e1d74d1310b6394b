"""SamPath: Fs (SAM encoder) + Fp (pathology encoder) -> R -> class-prompt mask decoder."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsiseg.errors import ConfigError
from wsiseg.model.class_decoder import PROMPT_DIM, ClassPromptDecoder, PromptState
from wsiseg.model.pathology_encoder import PathologyEncoder
from wsiseg.model.presets import (
    MODEL_PRESETS,
    PATCH_SIZE,
    build_pathology_encoder,
    build_sam_encoder,
    check_input_size,
)
from wsiseg.model.reduction import Reduction
from wsiseg.model.sam_encoder import SamImageEncoder


class Variant(str, enum.Enum):
    """Which encoders feed R (paper, Table 1)."""

    SAM_PATH = "sam_path"  #: Fs + Fp (the paper's SAM-Path)
    SAM_ONLY = "sam_only"  #: Fs only ("Fine-tuned SAM", w/o Fp)
    PATHOLOGY_ONLY = "pathology_only"  #: Fp only (SAM-Path w/o Fs)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`SamPath` (stored in checkpoints).

    ``input_size`` is the side (pixels) of the square model input; tiles are resized to it.
    ``train_encoders`` makes Fs/Fp trainable (frozen and kept in eval mode otherwise).
    """

    variant: Variant
    sam: str | None
    hipt: str | None
    num_classes: int
    input_size: int = 1024
    train_encoders: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", Variant(self.variant))
        check_input_size(self.input_size)
        if self.num_classes < 1:
            raise ConfigError(f"a model needs at least one class, got {self.num_classes}")
        needs_sam = self.variant in (Variant.SAM_PATH, Variant.SAM_ONLY)
        needs_hipt = self.variant in (Variant.SAM_PATH, Variant.PATHOLOGY_ONLY)
        if needs_sam != (self.sam is not None) or needs_hipt != (self.hipt is not None):
            raise ConfigError(
                f"variant {self.variant.value} needs "
                f"{'a' if needs_sam else 'no'} SAM encoder and {'a' if needs_hipt else 'no'} pathology "
                f"encoder (got sam={self.sam!r}, hipt={self.hipt!r})"
            )

    @classmethod
    def from_preset(cls, name: str, num_classes: int, *, variant: Variant | str | None = None,
                    input_size: int | None = None, train_encoders: bool = False) -> ModelConfig:
        """Config of a :data:`~wsiseg.model.presets.MODEL_PRESETS` entry; ``variant`` drops an encoder."""
        if name not in MODEL_PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(MODEL_PRESETS)}")
        p = MODEL_PRESETS[name]
        if variant is None:
            variant = (Variant.SAM_PATH if p.sam and p.hipt else
                       Variant.SAM_ONLY if p.sam else Variant.PATHOLOGY_ONLY)
        variant = Variant(variant)
        sam = p.sam if variant in (Variant.SAM_PATH, Variant.SAM_ONLY) else None
        hipt = p.hipt if variant in (Variant.SAM_PATH, Variant.PATHOLOGY_ONLY) else None
        return cls(variant, sam, hipt, num_classes, input_size or p.input_size, train_encoders)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["variant"] = self.variant.value
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        try:
            return cls(Variant(data["variant"]), data["sam"], data["hipt"], int(data["num_classes"]),
                       int(data["input_size"]), bool(data.get("train_encoders", False)))
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"malformed model config {data!r}: {exc}") from exc


class SamPath(nn.Module):
    """SAM-Path (REFERENCE.md section 1).

    ``forward(images (B, 3, S, S) float, ImageNet-normalised) -> (logits (B, k, S/4, S/4), iou (B, k))``
    with ``S = config.input_size``. ``encode`` is the frozen part (cacheable), ``decode`` the trainable one.
    Parameter groups: ``sam_encoder`` (Fs), ``pathology_encoder`` (Fp), ``prompt_encoder`` (frozen SAM
    prompt-encoder pieces), ``reduction`` (R), ``mask_decoder`` (class tokens, hypernetworks, IoU head).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        s = config.input_size
        self.sam_encoder: SamImageEncoder | None = build_sam_encoder(config.sam, s) if config.sam else None
        self.pathology_encoder: PathologyEncoder | None = (
            build_pathology_encoder(config.hipt, s) if config.hipt else None
        )
        self.reduction = Reduction(self.feature_channels, PROMPT_DIM)
        self.prompt_encoder = PromptState(self.grid_size, PROMPT_DIM)
        self.mask_decoder = ClassPromptDecoder(config.num_classes)
        self.prompt_encoder.requires_grad_(False)
        for enc in self.encoders():
            enc.requires_grad_(config.train_encoders)
        #: pretrained files loaded into this model: {"sam"|"hipt": {"file": name, "sha256": hex}}
        self.base_weights: dict[str, dict[str, str]] = {}
        self.train(False)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

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
        """Channels of ``encode``'s output: C_fs + C_fp (768 + 384 for ViT-B + ViT-S)."""
        return sum(enc.out_channels for enc in self.encoders())

    def encoders(self) -> list[SamImageEncoder | PathologyEncoder]:
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
        """``(B, C_fs + C_fp, G, G)`` -> ``(logits (B, k, 4G, 4G), iou (B, k))``."""
        emb = self.reduction(features)
        logits, iou = self.mask_decoder(emb, self.prompt_encoder.dense_pe(),
                                        self.prompt_encoder.dense_prompt(emb.shape[0]))
        return logits, iou

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self.encode(images))


def logits_to_probs(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Low-res logits ``(B, k, h, w)`` -> probabilities ``(B, k, H, W)``: bilinear resizing to ``size``
    (align_corners=False; antialiased when shrinking; none at the logits' own size), then a softmax over
    the k classes (float32)."""
    x = logits.float()
    if tuple(x.shape[-2:]) != tuple(size):
        shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return torch.softmax(x, dim=1)
