"""Loading the official pretrained weights: Segment Anything ``sam_vit_*.pth`` and HIPT's DINO checkpoint.

SAM (REFERENCE.md section 5): a flat state_dict with ``image_encoder.*`` (its ``neck.*`` is used only by
"Fine-tuned SAM", which keeps SAM's neck; R replaces it otherwise), ``prompt_encoder.*`` (only ``pe_layer``
and ``no_mask_embed`` are used) and ``mask_decoder.*`` with 4 mask tokens. The new decoder parts are
initialised as the reference code does (section 9): the class tokens stay freshly initialised
(``nn.Embedding``'s N(0, 1), seeded by the caller), EVERY hypernetwork MLP is a copy of SAM's pretrained
``output_hypernetworks_mlps[0]``, the IoU head's last layer stays fresh (``nn.Linear``'s default); the rest
of the decoder (two-way transformer, upscaling, IoU token, IoU head layers 0-1) takes SAM's weights.

HIPT (``vit256_small_dino.pth``): a DINO training dict whose ``teacher`` entry holds the weights under
``backbone.`` (and possibly ``module.``) prefixes; ``head.*`` (the DINO projection head) is dropped. Its
14 x 14 position table is stored as it is (the reference layout interpolates it on every forward);
layout-v1 models resize it once, bicubically, to the working grid.

Pathology foundation models (UNI, UNI2-h, Virchow2, H-optimus-0/1, Prov-GigaPath): the files their
publishers put beside the model cards, safetensors or PyTorch ``.bin`` with timm's own key names (a
``module.`` prefix is stripped, ``head.*`` dropped); the stored position table stays at its pretraining grid
(timm resamples it on every forward).

SAM's position embeddings, learned at 1024 px (64 x 64 grid), are resized bicubically to the working grid
``G = input_size / 16`` (antialiased only when shrinking); the relative position tables of the
global-attention blocks are resized linearly (what segment-anything's ``get_rel_pos`` does on the fly).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
import torch.nn.functional as F

from wsiseg.errors import CheckpointError, ConfigError, option
from wsiseg.io.hashing import file_sha256
from wsiseg.model.class_decoder import ClassPromptDecoder, PromptState
from wsiseg.model.foundation_encoder import FoundationEncoder, create_timm_vit
from wsiseg.model.foundation_specs import FOUNDATION_SPECS, FoundationSpec
from wsiseg.model.presets import (
    PATHOLOGY_ENCODERS,
    SAM_ENCODERS,
    build_pathology_encoder,
    build_sam_encoder,
    is_foundation_encoder,
)
from wsiseg.model.sam_path import SamPath
from wsiseg.model.torchfile import as_state_dict, check_layout, copy_into, torch_load, weights_load
from wsiseg.weights import known_encoder

#: input size of the official SAM weights and of HIPT's ViT-S (pixels)
SAM_PRETRAIN_SIZE = 1024
HIPT_PRETRAIN_SIZE = 224
#: how many multimask slots SAM's decoder has
SAM_MULTIMASK = 3
_SAM_IGNORED: tuple[str, ...] = ("prompt_encoder.point_embeddings.", "prompt_encoder.not_a_point_embed.",
                                  "prompt_encoder.mask_downscaling.")
_PROMPT_KEYS = ("pe_layer.positional_encoding_gaussian_matrix", "no_mask_embed.weight")
#: decoder parameters that stay freshly initialised (REFERENCE section 9)
_FRESH_DECODER = ("mask_tokens.", "iou_prediction_head.layers.2.")


def resize_grid_pos_embed(pos: torch.Tensor, grid: int, num_prefix: int = 0) -> torch.Tensor:
    """Resize position embeddings to a ``grid x grid`` layout, bicubic, align_corners=False.

    Enlarging uses plain bicubic, as DINO/HIPT's ``interpolate_pos_encoding``; shrinking is antialiased.

    Accepts SAM's ``(1, g, g, C)`` (``num_prefix`` must be 0) or ViT's ``(1, prefix + g*g, C)``.
    """
    if pos.ndim == 4:
        src = pos.permute(0, 3, 1, 2).float()
        shrink = grid < src.shape[-1]
        out = F.interpolate(src, size=(grid, grid), mode="bicubic", align_corners=False, antialias=shrink)
        return out.permute(0, 2, 3, 1).to(pos.dtype)
    prefix, patches = pos[:, :num_prefix], pos[:, num_prefix:]
    g_old = round(patches.shape[1] ** 0.5)
    src = patches.reshape(1, g_old, g_old, -1)
    return torch.cat([prefix, resize_grid_pos_embed(src, grid).reshape(1, grid * grid, -1)], dim=1)


def resize_rel_pos(rel: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resize a ``(L, head_dim)`` relative position table to ``length`` rows (as ``get_rel_pos``)."""
    out = F.interpolate(rel.float().t().unsqueeze(0), size=length, mode="linear")
    return out[0].t().to(rel.dtype).contiguous()


def _meta(fn: Any, *args: Any) -> Any:
    with torch.device("meta"):
        return fn(*args)


def _shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Size]:
    return {prefix + k: v.shape for k, v in module.state_dict().items()}


def load_sam_weights(model: SamPath, path: str | os.PathLike[str]) -> str:
    """Load an official SAM checkpoint into ``model``; return the file's sha256.

    Fills Fs (when present), the prompt state and the whole mask decoder (class slots as in the module
    docstring). R stays randomly initialised. Raises CheckpointError for a wrong file, a missing or
    unexpected key or a shape mismatch (naming the key and the expected shape), e.g. a ViT-L file for a
    ``sam_vit_b`` model.
    """
    what = "Segment Anything checkpoint"
    state = as_state_dict(torch_load(path, what), path, what)
    expected: dict[str, torch.Size] = {}
    ignored = _SAM_IGNORED
    if model.sam_encoder is not None:
        assert model.config.sam is not None
        ref_enc = _meta(build_sam_encoder, model.config.sam, SAM_PRETRAIN_SIZE, model.sam_encoder.has_neck)
        expected.update(_shapes(ref_enc, "image_encoder."))
        if not model.sam_encoder.has_neck:
            ignored = (*ignored, "image_encoder.neck.")
    else:
        ignored = (*ignored, "image_encoder.")
    ref_prompt = _meta(PromptState, SAM_PRETRAIN_SIZE // 16)
    expected.update({f"prompt_encoder.{k}": v for k, v in _shapes(ref_prompt).items()})
    expected.update(_shapes(_meta(ClassPromptDecoder, SAM_MULTIMASK), "mask_decoder."))
    hint = f" (is it the checkpoint of {model.config.sam}?)" if model.config.sam else ""
    try:
        check_layout(state, expected, path, what, ignored)
    except CheckpointError as exc:
        raise CheckpointError(str(exc) + hint) from None

    if model.sam_encoder is not None:
        enc_vals: dict[str, torch.Tensor] = {}
        own = model.sam_encoder.state_dict()
        for key, target in own.items():
            src = state["image_encoder." + key]
            if src.shape != target.shape:
                if key == "pos_embed":
                    src = resize_grid_pos_embed(src, model.grid_size)
                elif key.endswith(("rel_pos_h", "rel_pos_w")):
                    src = resize_rel_pos(src, target.shape[0])
            enc_vals[key] = src
        copy_into(model.sam_encoder, enc_vals)
    copy_into(model.prompt_encoder, {k: state["prompt_encoder." + k] for k in _PROMPT_KEYS})

    dec_vals: dict[str, torch.Tensor] = {}
    for key in model.mask_decoder.state_dict():
        if key.startswith(_FRESH_DECODER):
            continue
        if key.startswith("output_hypernetworks_mlps."):
            _, _, rest = key.split(".", 2)
            dec_vals[key] = state[f"mask_decoder.output_hypernetworks_mlps.0.{rest}"]
        else:
            dec_vals[key] = state["mask_decoder." + key]
    copy_into(model.mask_decoder, dec_vals)
    digest = file_sha256(path)
    model.base_weights["sam"] = {"file": os.path.basename(os.fspath(path)), "sha256": digest}
    return digest


def hipt_state_dict(obj: Any, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The backbone weights of a HIPT/DINO checkpoint: ``teacher`` entry (or a bare state_dict), with
    ``module.``/``backbone.`` prefixes stripped and ``head.*`` dropped."""
    what = "HIPT/DINO checkpoint"
    if isinstance(obj, dict) and "teacher" in obj:
        obj = obj["teacher"]
    elif isinstance(obj, dict) and ("student" in obj or "optimizer" in obj):
        raise CheckpointError(f"{path}: {what} has no 'teacher' weights (keys: {', '.join(map(str, obj))})")
    state = as_state_dict(obj, path, what)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if not k.startswith("head."):
            out[k] = value
    return out


def load_hipt_weights(model: SamPath, path: str | os.PathLike[str]) -> str:
    """Load HIPT's DINO ViT-S checkpoint into Fp; return the file's sha256.

    ``pos_embed`` [1, 197, C] (14x14 + CLS) is kept (reference layout) or resized to the working grid
    (layout v1). Raises CheckpointError for a wrong file, a missing/unexpected key or a shape mismatch,
    ConfigError when the model has no Fp.
    """
    if model.pathology_encoder is None or model.config.hipt is None:
        raise ConfigError(f"a {model.config.variant.value} model has no pathology encoder to load HIPT into")
    what = "HIPT/DINO checkpoint"
    state = hipt_state_dict(torch_load(path, what), path)
    ref = _meta(build_pathology_encoder, model.config.hipt, HIPT_PRETRAIN_SIZE)
    try:
        check_layout(state, _shapes(ref), path, what)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (is it the checkpoint of {model.config.hipt}?)") from None
    vals = dict(state)
    if vals["pos_embed"].shape != model.pathology_encoder.state_dict()["pos_embed"].shape:
        vals["pos_embed"] = resize_grid_pos_embed(vals["pos_embed"], model.grid_size, num_prefix=1)
    copy_into(model.pathology_encoder, vals)
    digest = file_sha256(path)
    model.base_weights["hipt"] = {"file": os.path.basename(os.fspath(path)), "sha256": digest}
    return digest


def foundation_state_dict(obj: Any, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The backbone weights of a foundation model's file: a state_dict (or one under ``model`` /
    ``state_dict``), ``module.`` prefixes stripped, ``head.*`` (classifier) dropped."""
    what = "foundation model weights file"
    if isinstance(obj, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    state = as_state_dict(obj, path, what)
    return {k.removeprefix("module."): v for k, v in state.items()
            if not k.removeprefix("module.").startswith("head.")}


def foundation_shapes(spec: FoundationSpec) -> dict[str, torch.Size]:
    """Key -> shape of ``spec``'s timm model as published (built once, on the meta device: no memory)."""
    return dict(_foundation_shapes(spec.name))


@functools.cache
def _foundation_shapes(name: str) -> tuple[tuple[str, torch.Size], ...]:
    return tuple(_shapes(create_timm_vit(FOUNDATION_SPECS[name], meta=True)).items())


def load_foundation_weights(model: SamPath, path: str | os.PathLike[str]) -> str:
    """Load a pathology foundation model's published weights into Fp; return the file's sha256.

    The file must hold exactly the keys and shapes of the model's timm architecture (module docstring);
    a missing, unexpected or misshaped key raises CheckpointError naming it. No code from the file runs
    (safetensors holds no code; ``.bin``/``.pth`` are read weights-only)."""
    enc = model.pathology_encoder
    if not isinstance(enc, FoundationEncoder):
        raise ConfigError(f"the model's pathology encoder is {model.config.hipt}, not a foundation model")
    what = f"{enc.spec.title} weights file"
    state = foundation_state_dict(weights_load(path, what), path)
    try:
        check_layout(state, foundation_shapes(enc.spec), path, what)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} (is it the file of {enc.spec.name}?)") from None
    for key, value in state.items():  # weights are floating point, whatever their precision
        if not value.is_floating_point():
            raise CheckpointError(f"{path}: {what} key {key!r} holds {value.dtype}, not floating-point "
                                  "weights")
    copy_into(enc.vit, state)
    digest = file_sha256(path)
    model.base_weights["hipt"] = {"file": os.path.basename(os.fspath(path)), "sha256": digest}
    return digest


def load_pathology_weights(model: SamPath, path: str | os.PathLike[str]) -> str:
    """Load Fp's published weights, HIPT's DINO file or a foundation model's; return the file's sha256."""
    if is_foundation_encoder(model.config.hipt):
        return load_foundation_weights(model, path)
    return load_hipt_weights(model, path)


def _foundation_matches(state: dict[str, torch.Tensor]) -> list[str]:
    """Foundation presets whose published layout equals ``state``'s keys and shapes (several when two
    models share an architecture, as H-optimus-0 and -1 do)."""
    found = {k: v.shape for k, v in state.items()}
    return [name for name, spec in FOUNDATION_SPECS.items() if found == foundation_shapes(spec)]


def _pick_encoder(path: str | os.PathLike[str], matches: list[str], encoder: str | None) -> str:
    if encoder is not None:
        if encoder not in matches:
            raise CheckpointError(f"{path} is not the weights file of {encoder} (its layout is that of "
                                  f"{' or '.join(matches)})")
        return encoder
    if len(matches) > 1:
        known = known_encoder(file_sha256(path))  # the publisher's sha256, where one is known
        if known in matches:
            return known
        raise CheckpointError(f"{path} has the layout of {' and of '.join(matches)}: say which it is "
                              f"({option('encoder')})")
    return matches[0]


def identify_base_weights(path: str | os.PathLike[str], encoder: str | None = None) -> tuple[str, str]:
    """Which official weights file ``path`` is, from its key layout and shapes alone.

    Returns ``("sam", SAM encoder preset)`` for a Segment Anything checkpoint (``sam_vit_b_01ec64.pth`` ->
    ``"sam_vit_b"``) or ``("hipt", Fp preset)`` for a HIPT/DINO checkpoint (``vit256_small_dino.pth`` ->
    ``"hipt_vit_s"``) or a pathology foundation model's file (``"uni"``, ``"virchow2"``, ...); the presets
    are those of :mod:`wsiseg.model.presets` at the files' pretraining sizes. Where two presets share a
    layout (H-optimus-0 and -1) ``encoder`` says which (and is checked against the layout otherwise).
    Raises CheckpointError for anything else.
    """
    obj = weights_load(path, "weights file")
    if isinstance(obj, dict) and obj.get("format") == "wsiseg-checkpoint":
        raise CheckpointError(f"{path} is a wsiseg model checkpoint, not official SAM, HIPT or foundation "
                              "model weights")
    if isinstance(obj, dict) and any(str(k).startswith("image_encoder.") for k in obj):
        state = as_state_dict(obj, path, "Segment Anything checkpoint")
        found = {k: v.shape for k, v in state.items()
                 if k.startswith("image_encoder.") and not k.startswith("image_encoder.neck.")}
        sams = [name for name in SAM_ENCODERS
                if _shapes(_meta(build_sam_encoder, name, SAM_PRETRAIN_SIZE), "image_encoder.") == found]
        if sams:
            return "sam", _pick_encoder(path, sams, encoder)
    elif isinstance(obj, dict):
        try:
            backbone = {k: v.shape for k, v in hipt_state_dict(obj, path).items()}
        except CheckpointError:
            backbone = {}
        hipts = [name for name in PATHOLOGY_ENCODERS
                 if _shapes(_meta(build_pathology_encoder, name, HIPT_PRETRAIN_SIZE)) == backbone]
        if hipts:
            return "hipt", _pick_encoder(path, hipts, encoder)
        try:
            foundations = _foundation_matches(foundation_state_dict(obj, path))
        except CheckpointError:
            foundations = []
        if foundations:
            return "hipt", _pick_encoder(path, foundations, encoder)
    raise CheckpointError(f"{path} is neither a Segment Anything checkpoint of a known size "
                          f"({', '.join(SAM_ENCODERS)}) nor a HIPT/DINO ViT checkpoint "
                          f"({', '.join(PATHOLOGY_ENCODERS)}) nor a pathology foundation model's file "
                          f"({', '.join(n for n, s in FOUNDATION_SPECS.items() if not s.tiny)})")
