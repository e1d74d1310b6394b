"""Models trained with the SAM-Path reference code (PyTorch Lightning checkpoints) as :class:`SamPath` models.

A reference checkpoint is a Lightning ``.ckpt``: ``state_dict`` with (REFERENCE.md section 9)

- ``model.model.image_encoder.*``: SAM's image encoder (``neck.*`` is used by ``PromptSAM`` = "Fine-tuned
  SAM" and unused, though stored, by ``PromptSAMLateFusion`` = SAM-Path);
- ``model.model.prompt_encoder.*``: SAM's prompt encoder (only ``pe_layer`` and ``no_mask_embed`` matter);
- ``model.model.mask_decoder.*``: the decoder with ``C + 1`` mask tokens for ``C`` channels (channel 0 =
  "unlabeled", so ``k = C - 1`` real classes);
- ``model.extra_encoder.model.*``: HIPT's ViT-S/16 with its 14 x 14 position table (SAM-Path only);
- ``model.fusion_neck.{0,1,2,3}.*``: R (SAM-Path only);

and ``hyper_parameters`` holding the training config as pickled third-party objects (``box.Box``). The
file is read with :func:`~wsiseg.model.torchfile.torch_load_inert`: no code from it runs, those objects
become inert stand-ins. The result is a reference-layout model that computes what the reference code computes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from wsiseg.classes import ClassList
from wsiseg.errors import CheckpointError
from wsiseg.io.hashing import file_sha256
from wsiseg.model.sam_path import ModelConfig, ModelLayout, SamPath, Variant
from wsiseg.model.torchfile import InertObject, torch_load_inert

_SAM = "model.model.image_encoder."
_PROMPT = "model.model.prompt_encoder."
_DECODER = "model.model.mask_decoder."
_HIPT = "model.extra_encoder.model."
_FUSION = "model.fusion_neck."
#: SAM image-encoder width -> wsiseg SAM encoder preset (the tiny ones for tests)
_SAM_BY_WIDTH = {768: "sam_vit_b", 1024: "sam_vit_l", 1280: "sam_vit_h", 64: "sam_tiny"}
#: HIPT width -> wsiseg pathology encoder preset
_HIPT_BY_WIDTH = {384: "hipt_vit_s", 48: "hipt_tiny"}
_PROMPT_USED = ("pe_layer.positional_encoding_gaussian_matrix", "no_mask_embed.weight")
#: input side of the reference models (they resize every image to it)
REFERENCE_INPUT_SIZE = 1024


@dataclass(frozen=True)
class ReferenceCheckpoint:
    """What a reference checkpoint holds: the model and plain facts about its training run."""

    model: SamPath
    variant: Variant
    epoch: int | None
    global_step: int | None
    hyper_parameters: dict[str, Any]
    sha256: str


def _plain(value: Any) -> Any:
    """JSON-able copy of a hyper-parameter value (inert stand-ins become their class name)."""
    if isinstance(value, InertObject):
        return f"<{value.qualname}>"
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return f"<{type(value).__name__}>"


def _state_dict(obj: Any, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or "state_dict" not in obj:
        keys = ", ".join(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path} is not a PyTorch Lightning checkpoint of the SAM-Path reference code "
                              f"(no 'state_dict'; found: {keys[:200]})")
    state = obj["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: its 'state_dict' is not a mapping of tensors")
    return {str(k): v for k, v in state.items()}


def _variant(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> Variant:
    has_hipt = any(k.startswith(_HIPT) for k in state)
    has_fusion = any(k.startswith(_FUSION) for k in state)
    if not any(k.startswith(_SAM) for k in state):
        raise CheckpointError(f"{path}: no key {_SAM}* (SAM's image encoder); not a SAM-Path reference model")
    if has_hipt and has_fusion:
        return Variant.SAM_PATH
    if not has_hipt and not has_fusion:
        return Variant.FINETUNED_SAM
    if has_hipt:
        raise CheckpointError(f"{path}: a HIPT encoder without fusion_neck (the reference's 'plus' model) "
                              "is not one of the paper's models; it cannot be imported")
    raise CheckpointError(f"{path}: fusion_neck without a HIPT encoder ({_HIPT}*); the file is incomplete")


def _need(state: Mapping[str, torch.Tensor], key: str, path: str | os.PathLike[str]) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{path}: reference checkpoint lacks key {key!r}")
    return state[key]


def _mapped(state: Mapping[str, torch.Tensor], variant: Variant) -> dict[str, torch.Tensor]:
    """The reference keys renamed to :class:`SamPath`'s (unused ones dropped)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(_SAM):
            rest = key[len(_SAM):]
            if rest.startswith("neck.") and variant is not Variant.FINETUNED_SAM:
                continue  # stored by SAM-Path, never used
            out["sam_encoder." + rest] = value
        elif key.startswith(_PROMPT):
            rest = key[len(_PROMPT):]
            if rest in _PROMPT_USED:
                out["prompt_encoder." + rest] = value
        elif key.startswith(_DECODER):
            out["mask_decoder." + key[len(_DECODER):]] = value
        elif key.startswith(_HIPT):
            out["pathology_encoder." + key[len(_HIPT):]] = value
        elif key.startswith(_FUSION):
            out["reduction.layers." + key[len(_FUSION):]] = value
        else:
            out[key] = value  # reported as unexpected by the caller
    return out


def read_reference_checkpoint(path: str | os.PathLike[str], classes: ClassList) -> ReferenceCheckpoint:
    """Build the reference-layout :class:`SamPath` of a reference checkpoint with ``classes`` (its ``k``
    real classes, in the reference's channel order 1..k). Raises CheckpointError (wrong, partial or
    foreign file, naming the key) or ClassMismatchError (``classes`` of another length)."""
    what = "SAM-Path reference checkpoint"
    obj = torch_load_inert(path, what)
    state = _state_dict(obj, path)
    variant = _variant(state, path)
    width = int(_need(state, _SAM + "patch_embed.proj.weight", path).shape[0])
    if width not in _SAM_BY_WIDTH:
        raise CheckpointError(f"{path}: SAM image encoder of width {width} is not ViT-B/L/H")
    hipt = None
    if variant.uses_hipt:
        hipt_width = int(_need(state, _HIPT + "cls_token", path).shape[-1])
        if hipt_width not in _HIPT_BY_WIDTH:
            raise CheckpointError(f"{path}: HIPT encoder of width {hipt_width} is not HIPT's ViT-S")
        hipt = _HIPT_BY_WIDTH[hipt_width]
    tokens = int(_need(state, _DECODER + "mask_tokens.weight", path).shape[0])
    k = tokens - 2  # C + 1 tokens, channel 0 "unlabeled"
    if k < 1:
        raise CheckpointError(f"{path}: the mask decoder has {tokens} tokens; a reference model has >= 3")
    classes.require_count(k, f"{path} (plus the reference's 'unlabeled' channel)")
    config = ModelConfig(variant, _SAM_BY_WIDTH[width], hipt, k, REFERENCE_INPUT_SIZE,
                         layout=ModelLayout.REFERENCE)
    model = SamPath(config)
    own = model.state_dict()
    mapped = _mapped(state, variant)
    for key, target in own.items():
        if key not in mapped:
            raise CheckpointError(f"{path}: reference checkpoint lacks key {_reference_key(key)!r} "
                                  f"(expected shape {list(target.shape)})")
        if mapped[key].shape != target.shape:
            raise CheckpointError(f"{path}: reference key {_reference_key(key)!r} has shape "
                                  f"{list(mapped[key].shape)}, expected {list(target.shape)}")
    extra = sorted(set(mapped) - set(own))
    if extra:
        raise CheckpointError(f"{path}: unexpected key {_reference_key(extra[0])!r} in a reference "
                              "checkpoint")
    model.load_state_dict(mapped, strict=True)
    hyper = obj.get("hyper_parameters") if isinstance(obj, Mapping) else None
    epoch, step = obj.get("epoch"), obj.get("global_step")
    return ReferenceCheckpoint(
        model=model, variant=variant, epoch=epoch if isinstance(epoch, int) else None,
        global_step=step if isinstance(step, int) else None,
        hyper_parameters=_plain(hyper) if isinstance(hyper, Mapping) else {}, sha256=file_sha256(path))


_OWN_TO_REFERENCE = (("sam_encoder.", _SAM), ("prompt_encoder.", _PROMPT), ("mask_decoder.", _DECODER),
                     ("pathology_encoder.", _HIPT), ("reduction.layers.", _FUSION))


def _reference_key(key: str) -> str:
    """The reference checkpoint's name of :class:`SamPath` key ``key`` (for messages)."""
    for own, ref in _OWN_TO_REFERENCE:
        if key.startswith(own):
            return ref + key[len(own):]
    return key


def import_reference_checkpoint(path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                                classes: ClassList, mpp: float | None, tile_size: int) -> ReferenceCheckpoint:
    """Convert a reference checkpoint into a self-contained ``.wsiseg`` file at ``out`` (written
    atomically) that ``wsiseg segment`` runs on whole slides; ``mpp`` (um/px) and ``tile_size`` (pixels at
    ``mpp``) record the resolution it was trained at. Returns what was read."""
    from wsiseg.model.checkpoint import save_checkpoint

    ref = read_reference_checkpoint(path, classes)
    provenance = {"imported_from": {
        "format": "SAM-Path reference code (cvlab-stonybrook/SAMPath) PyTorch Lightning checkpoint",
        "file": os.path.basename(os.fspath(path)), "sha256": ref.sha256, "model": ref.variant.value,
        "epoch": ref.epoch, "global_step": ref.global_step, "hyper_parameters": ref.hyper_parameters}}
    save_checkpoint(ref.model, out, classes=classes, mpp=mpp, tile_size=tile_size, self_contained=True,
                    extra_provenance=provenance)
    return ref
