"""Today's pathology foundation models as Fp: how each one's publishers build it with timm (one table).

Every entry is the ``timm.create_model`` call of the model's own card / ``config.json`` (sources and the
facts checked in docs/foundation-encoders.md): the timm architecture name, the keyword arguments its
publishers pass (``mlp_layer``/``act_layer`` by name: ``"swiglu_packed"`` is timm's ``SwiGLUPacked``,
``"silu"`` torch's ``SiLU``), the input normalisation on 0..1 RGB it was pretrained with and the tile it
was pretrained on. ``dynamic_img_size`` is always switched on by wsiseg (the working grid differs from the
pretraining one; timm then resamples the stored position table on every forward) and the heads are
dropped (``num_classes=0``); nothing else is changed, so the official files load key for key.

Tiny variants (``<name>_tiny``: depth 2, width 48, 2 heads, everything else as the full model: patch,
register tokens, class-token position, layer scale, MLP kind) exist for tests and CPU demos.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from wsiseg.model.preprocess import IMAGENET_MEAN, IMAGENET_STD

#: the width/depth/heads of every ``*_tiny`` variant
TINY_SIZE: Mapping[str, int] = {"embed_dim": 48, "depth": 2, "num_heads": 2}
#: H-optimus-0/1's own normalisation (their model cards' transforms)
H_OPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
H_OPTIMUS_STD = (0.211883, 0.230117, 0.177517)


@dataclass(frozen=True)
class FoundationSpec:
    """One pathology foundation model as its publishers create it with timm.

    ``arch``: the timm architecture; ``kwargs``: the publishers' keyword arguments (see the module
    docstring); ``mean``/``std``: the pretraining normalisation (0..1 RGB); ``title`` for messages. The
    published files, their licences and addresses are in :data:`wsiseg.weights.OFFICIAL_WEIGHTS`.
    """

    name: str
    title: str
    arch: str
    kwargs: Mapping[str, Any]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tiny: bool = False

    @property
    def patch(self) -> int:
        """Patch side in pixels (14 or 16)."""
        return int(self.kwargs["patch_size"])

    def tiny_variant(self) -> FoundationSpec:
        """The same architecture at :data:`TINY_SIZE` (random weights only)."""
        return replace(self, name=f"{self.name}_tiny", title=f"{self.title} (tiny test variant)",
                       kwargs={**self.kwargs, **TINY_SIZE}, tiny=True)


_SWIGLU = {"mlp_layer": "swiglu_packed", "act_layer": "silu"}
_FULL: tuple[FoundationSpec, ...] = (
    FoundationSpec(
        "uni", "UNI (ViT-L/16)", "vit_large_patch16_224",
        {"img_size": 224, "patch_size": 16, "init_values": 1e-5},
        IMAGENET_MEAN, IMAGENET_STD),
    FoundationSpec(
        "uni2_h", "UNI2-h (ViT-H/14, 1536 wide, SwiGLU, 8 registers)", "vit_giant_patch14_224",
        {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
         "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "no_embed_class": True, "reg_tokens": 8, **_SWIGLU},
        IMAGENET_MEAN, IMAGENET_STD),
    FoundationSpec(
        "virchow2", "Virchow2 (ViT-H/14, SwiGLU, 4 registers)", "vit_huge_patch14_224",
        {"img_size": 224, "patch_size": 14, "init_values": 1e-5, "mlp_ratio": 5.3375, "reg_tokens": 4,
         **_SWIGLU},
        IMAGENET_MEAN, IMAGENET_STD),
    FoundationSpec(
        "h_optimus_0", "H-optimus-0 (ViT-g/14, DINOv2, 4 registers)", "vit_giant_patch14_reg4_dinov2",
        {"img_size": 224, "patch_size": 14, "init_values": 1e-5},
        H_OPTIMUS_MEAN, H_OPTIMUS_STD),
    FoundationSpec(
        "h_optimus_1", "H-optimus-1 (ViT-g/14, DINOv2, 4 registers)", "vit_giant_patch14_reg4_dinov2",
        {"img_size": 224, "patch_size": 14, "init_values": 1e-5},
        H_OPTIMUS_MEAN, H_OPTIMUS_STD),
    FoundationSpec(
        "prov_gigapath", "Prov-GigaPath tile encoder (ViT-g/16, depth 40)", "vit_giant_patch14_dinov2",
        {"img_size": 224, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24,
         "init_values": 1e-5, "mlp_ratio": 5.33334},
        IMAGENET_MEAN, IMAGENET_STD),
)

#: name -> spec, full-size models and their ``*_tiny`` variants
FOUNDATION_SPECS: dict[str, FoundationSpec] = {
    s.name: s for full in _FULL for s in (full, full.tiny_variant())}
