"""Vanilla SAM (segment-anything, no training) for the paper's baselines: builders and the two segmenters.

Builders (:data:`VANILLA_SAM`): the official ``vit_b``, ``vit_l``, ``vit_h`` (segment-anything's
``sam_model_registry``; weights from the user's official file, e.g. ``sam_vit_b_01ec64.pth``, read with
``torch.load(weights_only=True)`` and checked key by key) and ``tiny`` (segment-anything's ``Sam`` with a
2-block, 64-wide image encoder at 256 px and a slim decoder; seeded random weights, for tests only).

- :class:`SamPointSegmenter`: ``SamPredictor``; one image embedding, then one decoder call per dot, each
  dot on its own (``multimask_output=True``, and of SAM's three masks the one with the highest predicted
  IoU is taken, SAM's own advice for a single ambiguous point).
- :class:`SamEverythingSegmenter`: ``SamAutomaticMaskGenerator`` ("segment everything": a grid of
  ``points_per_side`` x ``points_per_side`` dots, SAM's quality/stability filters and NMS).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from wsiseg._version import __version__
from wsiseg.errors import CheckpointError, ConfigError, option
from wsiseg.io.hashing import file_sha256
from wsiseg.model import resolve_device
from wsiseg.model.torchfile import as_state_dict, check_layout, torch_load
from wsiseg.weights import sam_weights_file


def build_tiny_sam(seed: int = 0) -> Sam:
    """segment-anything's ``Sam`` at 256 px with a tiny encoder (embed 64, depth 2) and decoder (dim 64).

    Random weights from ``seed`` (the global RNG is left untouched): a real SAM pipeline for CPU tests.
    """
    dim, size = 64, 256
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=size, patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=4,
                out_chans=dim, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True, window_size=4, global_attn_indexes=(1,)),
            prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(size // 16, size // 16),
                                         input_image_size=(size, size), mask_in_chans=16),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3, transformer_dim=dim, iou_head_depth=3, iou_head_hidden_dim=64,
                transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=128, num_heads=2)),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    return sam.eval()


def _official(name: str) -> Callable[[], Sam]:
    def build() -> Sam:
        sam: Sam = sam_model_registry[name](checkpoint=None)
        return sam.eval()

    build.__doc__ = f"segment-anything's {name} (random weights until the official file is loaded)."
    return build


#: name -> builder of a vanilla SAM (``Sam`` in eval mode)
VANILLA_SAM: dict[str, Callable[[], Sam]] = {
    "vit_b": _official("vit_b"),
    "vit_l": _official("vit_l"),
    "vit_h": _official("vit_h"),
    "tiny": build_tiny_sam,
}


#: the image encoder's width -> model name (to recognise a checkpoint)
_BY_WIDTH = {768: "vit_b", 1024: "vit_l", 1280: "vit_h", 64: "tiny"}
_WIDTH_KEY = "image_encoder.patch_embed.proj.weight"


def load_vanilla_sam(name: str | None, checkpoint: str | os.PathLike[str] | None = None,
                     device: str = "auto") -> tuple[Sam, dict[str, Any]]:
    """Build vanilla SAM ``name`` with the weights of ``checkpoint`` -> ``(model on device, provenance)``.

    ``name`` None: recognised from the checkpoint's encoder width. The official models need their
    official checkpoint; ``tiny`` runs on random weights unless one is given. A missing, truncated or
    foreign file, or one of another model, raises :class:`CheckpointError`.
    """
    if name is not None and name not in VANILLA_SAM:
        raise ConfigError(f"unknown vanilla SAM model {name!r}; choose one of {', '.join(VANILLA_SAM)}")
    if checkpoint is None and name != "tiny":
        raise ConfigError(f"vanilla SAM {name or 'vit_b'} needs its official weights: pass "
                          f"{option('sam_checkpoint')} {sam_weights_file(name or 'vit_b')}")
    state: dict[str, torch.Tensor] | None = None
    if checkpoint is not None:  # read (and reject a bad file) before building a large model
        what = f"SAM {name or ''} checkpoint".replace("  ", " ")
        state = as_state_dict(torch_load(checkpoint, what), checkpoint, what)
        if name is None:
            width = state.get(_WIDTH_KEY)
            name = _BY_WIDTH.get(int(width.shape[0])) if width is not None and width.ndim == 4 else None
            if name is None:
                raise CheckpointError(f"{checkpoint} is not a SAM checkpoint (vit_b, vit_l, vit_h): "
                                      f"no recognisable {_WIDTH_KEY}")
    assert name is not None
    dev = resolve_device(device)
    sam = VANILLA_SAM[name]()
    weights: dict[str, Any] = {"file": None, "sha256": None, "note": "random weights (test model)"}
    if checkpoint is not None and state is not None:
        expected = {k: v.shape for k, v in sam.state_dict().items()}
        hint = f" (is it {sam_weights_file(name)}?)" if name != "tiny" else ""
        try:
            check_layout(state, expected, checkpoint, f"SAM {name} checkpoint")
        except CheckpointError as exc:
            raise CheckpointError(str(exc) + hint) from None
        sam.load_state_dict(state)
        weights = {"file": Path(checkpoint).name, "sha256": file_sha256(checkpoint)}
    sam.to(dev)
    provenance = {"model": f"vanilla SAM {name}", "sam_model": name, "weights": weights,
                  "input_size": int(sam.image_encoder.img_size), "device": str(dev),
                  "precision": "fp32", "wsiseg_version": __version__}
    return sam, provenance


class SamPointSegmenter:
    """:class:`~wsiseg.baselines.segmenter.PointPromptSegmenter` around segment-anything's ``SamPredictor``.

    Per image: one embedding (``set_image``), then one ``predict`` per dot (a positive point label,
    ``multimask_output=True``), keeping the mask of the highest predicted IoU of SAM's three.
    """

    def __init__(self, sam: Sam, provenance: dict[str, Any] | None = None) -> None:
        self.predictor = SamPredictor(sam)
        self._provenance = dict(provenance or {})

    def segment(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        out = np.zeros((len(points), h, w), dtype=bool)
        if len(points) == 0:
            return out
        self.predictor.set_image(image, image_format="RGB")
        for j, (x, y) in enumerate(np.asarray(points, dtype=np.float64)):
            masks, scores, _ = self.predictor.predict(point_coords=np.array([[x, y]]),
                                                      point_labels=np.array([1]), multimask_output=True)
            out[j] = masks[int(np.argmax(scores))]
        self.predictor.reset_image()
        return out

    def provenance(self) -> dict[str, Any]:
        return {**self._provenance, "prompts": "one positive dot per ground-truth instance, each decoded "
                "on its own; multimask_output=True, the mask of the highest predicted IoU is kept"}


class SamEverythingSegmenter:
    """:class:`~wsiseg.baselines.segmenter.MaskGenerator` around ``SamAutomaticMaskGenerator``.

    ``options`` go to the generator unchanged (its defaults are segment-anything's, chosen for ViT-H:
    32 x 32 points, predicted IoU >= 0.88, stability >= 0.95, box NMS 0.7).
    """

    def __init__(self, sam: Sam, provenance: dict[str, Any] | None = None, *, points_per_side: int = 32,
                 **options: Any) -> None:
        self.generator = SamAutomaticMaskGenerator(sam, points_per_side=points_per_side,
                                                   output_mode="binary_mask", **options)
        self._settings = {"points_per_side": points_per_side, **options}
        self._provenance = dict(provenance or {})

    def generate(self, image: np.ndarray) -> np.ndarray:
        found = self.generator.generate(image)
        h, w = image.shape[:2]
        if not found:
            return np.zeros((0, h, w), dtype=bool)
        return np.stack([np.asarray(m["segmentation"], dtype=bool) for m in found])

    def provenance(self) -> dict[str, Any]:
        return {**self._provenance, "prompts": "segment everything (SamAutomaticMaskGenerator)",
                "generator": self._settings}
