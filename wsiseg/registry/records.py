"""The registry file's contents as typed records, and its JSON layout (``format_version`` 1)::

    {"format": "wsiseg-registry", "format_version": 1, "default": "bcss",
     "models": {"bcss": {"path": "/abs/best.wsiseg", "sha256": "...", "added": "ISO time",
                         "base": {"sam": {"file": "sam_vit_b_01ec64.pth", "sha256": "..."}, ...}}},
     "base_files": [{"kind": "sam", "encoder": "sam_vit_b", "path": "/abs/sam_vit_b_01ec64.pth",
                     "sha256": "...", "added": "ISO time"}, ...]}

``base`` lists what a slim checkpoint needs again (the encoders it does not store); registered base files
are found again by sha256 when such a model is loaded, and by encoder preset when training.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsiseg.errors import ConfigError
from wsiseg.weights import KINDS

FORMAT = "wsiseg-registry"
FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
#: File endings that make a model spec a path rather than a registered name.
MODEL_SUFFIXES = (".wsiseg", ".pt", ".pth", ".ckpt")


class CorruptRegistry(ValueError):
    """The registry file's contents do not follow the layout (the message says what is wrong)."""


class NewerRegistry(ValueError):
    """The registry file was written by a newer wsiseg (a higher ``format_version``)."""


@dataclass(frozen=True)
class RegisteredModel:
    """A named model: ``path`` (absolute) of a ``.wsiseg`` file, its ``sha256`` when registered, and the
    ``base`` files it needs again ({"sam"|"hipt": {"file", "sha256"}}; empty when self-contained)."""

    name: str
    path: Path
    sha256: str
    base: dict[str, dict[str, str]] = field(default_factory=dict)
    added: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "added": self.added,
                "base": {k: dict(v) for k, v in self.base.items()}}


@dataclass(frozen=True)
class BaseFile:
    """A registered official weights file: ``kind`` "sam"|"hipt", its ``encoder`` preset (e.g.
    ``sam_vit_b``), absolute ``path`` and ``sha256``."""

    kind: str
    encoder: str
    path: Path
    sha256: str
    added: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "encoder": self.encoder, "path": str(self.path), "sha256": self.sha256,
                "added": self.added}


@dataclass
class RegistryContents:
    """Everything the registry file holds: ``models`` by name in the order they were added, the
    ``default`` model's name (or ``None``) and the ``base_files`` in the order they were added."""

    models: dict[str, RegisteredModel] = field(default_factory=dict)
    default: str | None = None
    base_files: list[BaseFile] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "default": self.default,
                "models": {n: m.to_json() for n, m in self.models.items()},
                "base_files": [b.to_json() for b in self.base_files]}

    @classmethod
    def from_json(cls, data: Any) -> RegistryContents:
        """Parse the file's JSON; layouts it cannot hold raise :class:`CorruptRegistry`, a newer
        ``format_version`` :class:`NewerRegistry`."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CorruptRegistry(f"not a {FORMAT} file")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise NewerRegistry(f"format version {version!r}, newer than this wsiseg supports "
                                f"({FORMAT_VERSION})")
        models, bases, default = data.get("models"), data.get("base_files"), data.get("default")
        if not isinstance(models, dict) or not isinstance(bases, list):
            raise CorruptRegistry("'models' must be a mapping and 'base_files' a list")
        contents = cls({name: _model(name, entry) for name, entry in models.items()}, None,
                       [_base_file(i, entry) for i, entry in enumerate(bases)])
        if default is not None and (not isinstance(default, str) or default not in models):
            raise CorruptRegistry(f"the default {default!r} is not a registered model")
        contents.default = default
        return contents


def _model(name: str, entry: Any) -> RegisteredModel:
    base = entry.get("base", {}) if isinstance(entry, dict) else None
    ok = (isinstance(entry, dict) and isinstance(entry.get("path"), str)
          and isinstance(entry.get("sha256"), str) and isinstance(base, dict)
          and all(k in KINDS and isinstance(v, dict) for k, v in base.items()))
    if not ok or not isinstance(base, dict):
        raise CorruptRegistry(f"model {name!r} needs 'path', 'sha256' and a 'base' mapping")
    return RegisteredModel(name, Path(entry["path"]), entry["sha256"],
                           {k: {str(a): str(b) for a, b in v.items()} for k, v in base.items()},
                           str(entry.get("added", "")))


def _base_file(index: int, entry: Any) -> BaseFile:
    ok = (isinstance(entry, dict) and entry.get("kind") in KINDS
          and all(isinstance(entry.get(k), str) for k in ("encoder", "path", "sha256")))
    if not ok:
        raise CorruptRegistry(f"base file #{index + 1} needs 'kind' (sam|hipt), 'encoder', 'path', 'sha256'")
    return BaseFile(entry["kind"], entry["encoder"], Path(entry["path"]), entry["sha256"],
                    str(entry.get("added", "")))


def looks_like_model_path(spec: str) -> bool:
    """True when ``spec`` holds a path separator or a checkpoint file ending (so it is never a name)."""
    return os.sep in spec or "/" in spec or spec.lower().endswith(MODEL_SUFFIXES)


def check_name(name: str) -> str:
    """Return ``name`` if it can be a registered model name, else raise ConfigError."""
    if not _NAME_RE.match(name) or looks_like_model_path(name) or name == "null":
        raise ConfigError(f"invalid model name {name!r}: use letters, digits and . _ + - (not 'null', no "
                          f"path separator, no {'/'.join(MODEL_SUFFIXES)} ending)")
    return name
