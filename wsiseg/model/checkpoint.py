"""wsiseg's own checkpoint format (``*.wsiseg``): a ``torch.save``d dict of plain values and tensors.

Contents: ``format``/``format_version``, ``config`` (:class:`ModelConfig`, with its ``layout``: version 1
files, written by wsiseg 0.1, have none and load as layout v1), ``classes``
(``ClassList.to_dict()``), ``normalization`` (mean/std on 0..1 RGB), ``mpp`` (um/px the model was trained
at, or None), ``tile_size`` (tile side at ``mpp``, pixels), ``state_dict`` (stored tensors), ``base``
({"sam"|"hipt": {"file", "sha256"}} for encoders NOT stored) and ``provenance``.

Slim (default): a frozen encoder that was loaded from an official file is not stored; loading needs that
file again and checks its sha256. Everything else (R, decoder, class tokens, prompt state, and any encoder
that is trainable or randomly initialised) is always stored. ``self_contained=True`` stores everything.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wsiseg._version import __version__
from wsiseg.classes import ClassList
from wsiseg.errors import CheckpointError, ConfigError, OutputError, option
from wsiseg.io.atomic import replacing
from wsiseg.io.hashing import file_sha256
from wsiseg.model.official import load_pathology_weights, load_sam_weights
from wsiseg.model.preprocess import IMAGENET_MEAN, IMAGENET_STD
from wsiseg.model.sam_path import ModelConfig, SamPath
from wsiseg.model.torchfile import torch_load, torch_load_inert
from wsiseg.weights import weights_label

FORMAT = "wsiseg-checkpoint"
FORMAT_VERSION = 2
#: The ``format`` tag of the training run's resume state (:mod:`wsiseg.train.resume_state`): named here so
#: that passing one as a model is recognised.
TRAIN_STATE_FORMAT = "wsiseg-train-state"
_ENCODER_PREFIX = {"sam": "sam_encoder.", "hipt": "pathology_encoder."}


@dataclass
class CheckpointData:
    """The decoded content of a ``.wsiseg`` file (see the module docstring)."""

    config: ModelConfig
    classes: ClassList
    mpp: float | None
    tile_size: int
    state_dict: dict[str, torch.Tensor]
    base: dict[str, dict[str, str]] = field(default_factory=dict)
    normalization: dict[str, list[float]] = field(
        default_factory=lambda: {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})
    provenance: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(model: SamPath, path: str | os.PathLike[str], *, classes: ClassList,
                    mpp: float | None, tile_size: int, self_contained: bool = False,
                    extra_provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` (atomically) and return the path.

    ``mpp`` (um/px) and ``tile_size`` (pixels at ``mpp``) record how the model was trained/meant to run.
    ``extra_provenance`` (JSON-serialisable) is merged into the provenance, e.g. training recipe and data.
    """
    classes.require_count(model.num_classes, "the model")
    base: dict[str, dict[str, str]] = {}
    skip: tuple[str, ...] = ()
    if not self_contained and not model.config.train_encoders:
        for name, prefix in _ENCODER_PREFIX.items():
            if name in model.base_weights and any(k.startswith(prefix) for k in model.state_dict()):
                base[name] = dict(model.base_weights[name])
                skip = (*skip, prefix)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith(skip)}
    provenance: dict[str, Any] = {
        "wsiseg_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),
        "base_weights": {k: dict(v) for k, v in model.base_weights.items()},
        **(extra_provenance or {}),
    }
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "classes": classes.to_dict(),
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "mpp": None if mpp is None else float(mpp),
        "tile_size": int(tile_size),
        "state_dict": state,
        "base": base,
        "provenance": provenance,
    }
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with replacing(out) as tmp:
            torch.save(payload, tmp)
    except OSError as exc:
        raise OutputError(f"cannot write checkpoint {out}: {exc.strerror or exc}") from exc
    return out


def read_checkpoint(path: str | os.PathLike[str]) -> CheckpointData:
    """Read and validate a ``.wsiseg`` file (no model is built). Raises CheckpointError."""
    what = "wsiseg checkpoint"
    try:
        obj = torch_load(path, what)
    except CheckpointError as exc:  # pickled Python objects: say what the file is if we can tell
        try:
            hint = _what_else(torch_load_inert(path, what))
        except CheckpointError:
            hint = None
        if hint is None:
            raise
        raise CheckpointError(f"{path} is not a {what}: {hint}") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        hint = _what_else(obj)
        raise CheckpointError(f"{path} is not a {what}" + (f": {hint}" if hint else ""))
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is newer than this wsiseg "
                              f"supports ({FORMAT_VERSION}); upgrade wsiseg")
    try:
        config = ModelConfig.from_dict(obj["config"])
        classes = ClassList.from_dict(obj["classes"])
        state = obj["state_dict"]
        if not isinstance(state, dict):
            raise TypeError("state_dict is not a dict")
        return CheckpointData(config=config, classes=classes, mpp=obj["mpp"], tile_size=int(obj["tile_size"]),
                              state_dict=state, base=dict(obj.get("base") or {}),
                              normalization=dict(obj["normalization"]), provenance=dict(obj["provenance"]))
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{path}: malformed {what} ({exc})") from exc


def _what_else(obj: Any) -> str | None:
    """What a torch file that is not a ``.wsiseg`` model holds and what to pass instead (None: unknown)."""
    if not isinstance(obj, dict):
        return None
    keys = [str(k) for k in obj]
    if obj.get("format") == TRAIN_STATE_FORMAT or {"optimizer", "rng", "epoch"} <= set(keys):  # 0.1: no tag
        return ("it is a training-state file (written by `wsiseg train` so that training can resume); "
                "pass the best.wsiseg or last.wsiseg file beside it")
    if "pytorch-lightning_version" in obj or {"state_dict", "optimizer_states"} <= set(keys):
        return ("it is a PyTorch Lightning checkpoint (e.g. of the SAM-Path reference code); convert it "
                "with `wsiseg import-reference` and pass the .wsiseg file that writes")
    if any(k.startswith("mask_decoder.") for k in keys):
        return (f"it looks like an official SAM file: pass it as the SAM checkpoint "
                f"({option('sam_checkpoint')}) instead")
    if "teacher" in obj or "student" in obj or any(k.startswith(("patch_embed.", "blocks.")) for k in keys):
        return (f"it looks like ViT/HIPT weights: pass it as the HIPT checkpoint "
                f"({option('hipt_checkpoint')}) instead")
    return None


def _base_file(name: str, encoder: str, given: str | os.PathLike[str] | None, record: dict[str, str],
               path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """The base file ``given`` for the ``name`` slot ("sam"/"hipt") of ``encoder``, checked by sha256."""
    flag = option(f"{name}_checkpoint")
    label = weights_label(name, encoder)
    if given is None:
        raise CheckpointError(
            f"{path} is slim: it needs the {label} weights file {record.get('file')!r} "
            f"(sha256 {record.get('sha256', '?')[:12]}...); pass it with {flag}")
    if not Path(given).is_file():
        raise CheckpointError(f"{label} weights file not found: {given}")
    digest = file_sha256(given)
    if digest != record.get("sha256"):
        raise CheckpointError(
            f"{given} is not the {label} weights file this model was trained with "
            f"(sha256 {digest[:12]}... != {record.get('sha256', '?')[:12]}..., "
            f"expected {record.get('file')!r})")
    return given


def build_from_checkpoint(data: CheckpointData, path: str | os.PathLike[str] = "<checkpoint>", *,
                          sam_checkpoint: str | os.PathLike[str] | None = None,
                          hipt_checkpoint: str | os.PathLike[str] | None = None) -> SamPath:
    """Rebuild the model: base weights (slim checkpoints, sha256-checked) first, then the stored tensors."""
    model = SamPath(data.config)
    if "sam" in data.base:
        load_sam_weights(model, _base_file("sam", str(data.config.sam), sam_checkpoint, data.base["sam"],
                                           path))
    if "hipt" in data.base:
        load_pathology_weights(model, _base_file("hipt", str(data.config.hipt), hipt_checkpoint,
                                                 data.base["hipt"], path))
    own = model.state_dict()
    skip = tuple(_ENCODER_PREFIX[n] for n in data.base)
    for key, target in own.items():
        if key.startswith(skip):
            continue
        if key not in data.state_dict:
            raise CheckpointError(
                f"{path}: checkpoint lacks key {key!r} (expected shape {list(target.shape)})")
        value = data.state_dict[key]
        if not isinstance(value, torch.Tensor) or value.shape != target.shape:
            shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{path}: checkpoint key {key!r} has shape {shape}, "
                                  f"expected {list(target.shape)}")
    extra = sorted(set(data.state_dict) - set(own))
    if extra:
        raise CheckpointError(f"{path}: unexpected key {extra[0]!r} in checkpoint")
    model.load_state_dict({**own, **data.state_dict}, strict=True)
    model.base_weights.update({k: dict(v) for k, v in data.provenance.get("base_weights", {}).items()})
    return model


def load_checkpoint(path: str | os.PathLike[str], *, sam_checkpoint: str | os.PathLike[str] | None = None,
                    hipt_checkpoint: str | os.PathLike[str] | None = None,
                    classes: ClassList | None = None) -> tuple[SamPath, CheckpointData]:
    """Read ``path`` and rebuild its model (eval mode, CPU).

    ``classes``, when given, must match the checkpoint's class count (ClassMismatchError otherwise); its
    names/colours then replace the stored ones."""
    data = read_checkpoint(path)
    if classes is not None:
        classes.require_count(len(data.classes), f"{path} ({', '.join(data.classes.names)})")
        data.classes = classes
    model = build_from_checkpoint(data, path, sam_checkpoint=sam_checkpoint, hipt_checkpoint=hipt_checkpoint)
    return model, data
