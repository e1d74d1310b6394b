"""Choosing the files a run uses: a model spec -> checkpoint + base weights; encoder presets -> weights.

Environment: ``WSISEG_MODEL`` (the model used when none is given: a registered name or a path; it comes
before the registry's default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from wsiseg.errors import CheckpointError, ConfigError, option
from wsiseg.registry.places import ENV_MODEL
from wsiseg.registry.records import RegisteredModel, looks_like_model_path
from wsiseg.registry.store import Registry
from wsiseg.weights import KINDS, OFFICIAL_WEIGHTS, OfficialWeights, weights_label

#: One line listing the three ways of choosing a model.
NO_MODEL_MESSAGE = (f"no model given: pass {option('model')} NAME|FILE, set {ENV_MODEL}=NAME|FILE, or "
                    "register a default once with `wsiseg models add NAME FILE --default`")


class ModelSource(str, Enum):
    """Where a resolved model spec came from: given by the caller, ``$WSISEG_MODEL``, the registry's
    default."""

    GIVEN = "given"
    ENVIRONMENT = ENV_MODEL
    DEFAULT = "default"


@dataclass(frozen=True)
class ResolvedModel:
    """What a model spec resolved to: the checkpoint ``path`` and the base weight files it needs (given
    ones first, then registered ones found by sha256; ``None`` where not needed). ``name`` is the
    registered name, if it was one; ``source`` says where the spec came from."""

    path: Path
    sam_checkpoint: Path | None = None
    hipt_checkpoint: Path | None = None
    name: str | None = None
    source: ModelSource = ModelSource.GIVEN


@dataclass(frozen=True)
class TrainingWeights:
    """Base weights for a fresh model: per kind the file to load (given, else registered for the
    encoder preset, else ``None``) and the ``missing`` official files a full-size encoder should load."""

    sam_checkpoint: Path | None
    hipt_checkpoint: Path | None
    missing: tuple[OfficialWeights, ...] = ()


def resolve_model(model: str | None, *, sam_checkpoint: str | os.PathLike[str] | None = None,
                  hipt_checkpoint: str | os.PathLike[str] | None = None,
                  registry: Registry | None = None) -> ResolvedModel:
    """Turn a model spec into a checkpoint path plus the base files it needs.

    ``model``: a registered name, or a checkpoint path (a value with a path separator or a
    ``.wsiseg``/``.pt``/``.pth``/``.ckpt`` ending is always a path; a bare word is a registered name
    first, then a file of that name). ``None``: ``$WSISEG_MODEL``, else the registry's default, else
    ConfigError (:data:`NO_MODEL_MESSAGE`). ``sam_checkpoint``/``hipt_checkpoint`` are used as given;
    base files a slim checkpoint needs beyond them are looked up among the registered ones by sha256
    (a path spec's checkpoint is read for that, with torch). ``registry``: default the user's. Raises
    ConfigError (unknown name, corrupt registry) and CheckpointError (missing file, needed base file
    neither given nor registered).
    """
    registry = registry if registry is not None else Registry()
    spec, source = _spec(model, registry)
    path, record = _locate(registry, spec, source)
    given: dict[str, Path | None] = {"sam": _path(sam_checkpoint), "hipt": _path(hipt_checkpoint)}
    if record is not None:
        needs = record.base
    elif all(given.values()):
        needs = {}
    else:
        from wsiseg.model.checkpoint import read_checkpoint

        needs = read_checkpoint(path).base
    for kind, rec in needs.items():
        if kind in given and given[kind] is None:
            given[kind] = _registered_base(registry, spec, kind, rec)
    return ResolvedModel(path, given["sam"], given["hipt"], record.name if record else None, source)


def _spec(model: str | None, registry: Registry) -> tuple[str, ModelSource]:
    if model is not None:
        return model, ModelSource.GIVEN
    env = os.environ.get(ENV_MODEL)
    if env:
        return env, ModelSource.ENVIRONMENT
    default = registry.default
    if default is None:
        raise ConfigError(NO_MODEL_MESSAGE)
    return default, ModelSource.DEFAULT


def _registered_base(registry: Registry, spec: str, kind: str, record: dict[str, str]) -> Path:
    """The registered base file a slim model needs (by sha256); CheckpointError when none or gone."""
    found = registry.find_base(str(record.get("sha256")))
    if found is None:
        raise CheckpointError(
            f"model {spec} is slim: it needs the {weights_label(kind)} weights {record.get('file')!r} "
            f"(sha256 {str(record.get('sha256'))[:12]}...), which are not registered: pass "
            f"{option(kind + '_checkpoint')} FILE or register the file once with "
            "`wsiseg models add-base FILE`")
    _check_present(kind, found.path)
    return found.path


def _check_present(kind: str, path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"the registered {weights_label(kind)} weights {path} are missing; register "
                              "them again with `wsiseg models add-base FILE`")


def _locate(registry: Registry, spec: str, source: ModelSource) -> tuple[Path, RegisteredModel | None]:
    """The checkpoint path of a spec, with its registry record when it is a registered name."""
    env = f"{ENV_MODEL}={spec}: " if source is ModelSource.ENVIRONMENT else ""
    if not looks_like_model_path(spec):
        models = registry.read().models
        if spec in models:
            record = models[spec]
            if not record.path.is_file():
                raise CheckpointError(
                    f"{env}registered model {spec!r} points to {record.path}, which does not exist; register "
                    f"it again (`wsiseg models add {spec} FILE --replace`) or remove it")
            return record.path, record
        if not Path(spec).is_file():
            known = ", ".join(models) or "none"
            if env:
                raise ConfigError(f"{env}no such file and no registered model of that name "
                                  f"(registered: {known})")
            raise ConfigError(f"unknown model {spec!r}: not a registered name (registered: {known}) nor a "
                              "file; see `wsiseg models list`")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{env}no such model file" if env else f"model file not found: {spec}")
    return path, None


def training_weights(encoders: dict[str, str | None], *, sam_checkpoint: str | os.PathLike[str] | None = None,
                     hipt_checkpoint: str | os.PathLike[str] | None = None,
                     registry: Registry | None = None) -> TrainingWeights:
    """Base weights for a fresh model whose encoder presets are ``encoders`` ({"sam": "sam_vit_b",
    "hipt": "hipt_vit_s"}; ``None`` for an encoder the model lacks): the given file, else the one
    registered for that preset (``registry``: default the user's; read only when a file is not given),
    else ``None``; ``missing`` lists the official files of full-size presets
    (:data:`wsiseg.weights.OFFICIAL_WEIGHTS`) that are neither given nor registered."""
    chosen: dict[str, Path | None] = {"sam": _path(sam_checkpoint), "hipt": _path(hipt_checkpoint)}
    missing: list[OfficialWeights] = []
    for kind in KINDS:
        encoder = encoders.get(kind)
        if encoder is None or chosen[kind] is not None:
            continue
        found = (registry if registry is not None else Registry()).base_for_encoder(encoder)
        if found is not None:
            _check_present(kind, found.path)
            chosen[kind] = found.path
        elif encoder in OFFICIAL_WEIGHTS:
            missing.append(OFFICIAL_WEIGHTS[encoder])
    return TrainingWeights(chosen["sam"], chosen["hipt"], tuple(missing))


def _path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)
