"""The user's configuration: registered models (by name, a default), official base weight files, and
where data sets live.

- :mod:`~wsiseg.registry.places`: the config folder (``$WSISEG_HOME``) and data folders (``$WSISEG_DATA``).
- :mod:`~wsiseg.registry.records`: the registry file's typed records and JSON layout.
- :mod:`~wsiseg.registry.store`: :class:`Registry`, the file store (atomic writes, changes under a lock).
- :mod:`~wsiseg.registry.resolve`: a model spec -> checkpoint and base files (``$WSISEG_MODEL``, the
  default); encoder presets -> training weights.

Torch-free at import time. Only the CLI uses this package: ``model``, ``infer`` and ``train`` take paths.
"""

from __future__ import annotations

from wsiseg.registry.places import ENV_DATA, ENV_HOME, ENV_MODEL, config_dir, default_data_dir, find_data_dir
from wsiseg.registry.records import (
    BaseFile,
    RegisteredModel,
    RegistryContents,
    check_name,
    looks_like_model_path,
)
from wsiseg.registry.resolve import (
    NO_MODEL_MESSAGE,
    ModelSource,
    ResolvedModel,
    TrainingWeights,
    resolve_model,
    training_weights,
)
from wsiseg.registry.store import REGISTRY_FILE, Registry

__all__ = [
    "ENV_DATA",
    "ENV_HOME",
    "ENV_MODEL",
    "NO_MODEL_MESSAGE",
    "REGISTRY_FILE",
    "BaseFile",
    "ModelSource",
    "RegisteredModel",
    "Registry",
    "RegistryContents",
    "ResolvedModel",
    "TrainingWeights",
    "check_name",
    "config_dir",
    "default_data_dir",
    "find_data_dir",
    "looks_like_model_path",
    "resolve_model",
    "training_weights",
]
