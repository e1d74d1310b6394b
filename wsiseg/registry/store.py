"""The user's model registry: one small JSON file of named models, a default, and base weight files.

The file is ``registry.json`` in :func:`~wsiseg.registry.places.config_dir`; its layout is
:mod:`wsiseg.registry.records`. Reads take no lock (the file is replaced atomically: a temporary file in
the same folder, then ``os.replace``, so a reader sees the old file or the new one, never half of one).
Every change reads, modifies and writes the file under an exclusive lock on ``registry.json.lock``
(``filelock``: ``flock`` on POSIX, ``msvcrt`` locking on Windows, released by the operating system when a
process dies), so processes that add models at the same time lose nothing.

Torch-free at import time: registering a model or a base file reads it with torch (imported then).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import filelock

from wsiseg.errors import CheckpointError, ConfigError, OutputError, option
from wsiseg.io.atomic import write_text
from wsiseg.io.hashing import file_sha256
from wsiseg.registry.places import config_dir
from wsiseg.registry.records import (
    BaseFile,
    CorruptRegistry,
    NewerRegistry,
    RegisteredModel,
    RegistryContents,
    check_name,
)
from wsiseg.weights import KINDS, weights_label

REGISTRY_FILE = "registry.json"
#: seconds a change waits for another process's change to finish
LOCK_TIMEOUT_S = 60.0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Registry:
    """The registry file in ``home`` (default :func:`~wsiseg.registry.places.config_dir`), read on every
    call (it is small), so several processes see each other's changes; a missing file is an empty
    registry.

    A corrupt or unreadable file raises ConfigError (one line naming the file); a file that cannot be
    written, or a lock not obtained within :data:`LOCK_TIMEOUT_S`, raises OutputError.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home) if home is not None else config_dir()
        self.path = self.home / REGISTRY_FILE

    # -- the file ---------------------------------------------------------------------------------------
    def read(self) -> RegistryContents:
        """The registry's contents now (an empty registry when the file does not exist)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return RegistryContents()
        except OSError as exc:
            raise ConfigError(f"cannot read model registry {self.path}: {exc.strerror or exc}") from exc
        try:
            return RegistryContents.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise self._corrupt(f"not JSON: {exc.msg} at line {exc.lineno}") from exc
        except CorruptRegistry as exc:
            raise self._corrupt(str(exc)) from exc
        except NewerRegistry as exc:
            raise ConfigError(f"model registry {self.path} has {exc}; upgrade wsiseg") from exc

    def _corrupt(self, why: str) -> ConfigError:
        return ConfigError(f"model registry {self.path} is corrupt ({why}); fix it, or delete it to start "
                           "afresh (then register models again)")

    @contextmanager
    def _change(self) -> Iterator[RegistryContents]:
        """Hold the registry's lock, yield its contents to change in place, write them on a clean exit."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(self.path.with_name(REGISTRY_FILE + ".lock"), timeout=LOCK_TIMEOUT_S)
            lock.acquire()
        except filelock.Timeout as exc:
            raise OutputError(f"model registry {self.path} stayed locked for {LOCK_TIMEOUT_S:.0f} s by "
                              "another process; try again") from exc
        except OSError as exc:
            raise OutputError(f"cannot write model registry {self.path}: {exc.strerror or exc}") from exc
        try:
            contents = self.read()
            yield contents
            try:
                write_text(self.path, json.dumps(contents.to_json(), indent=2) + "\n", fsync=True)
            except OSError as exc:
                raise OutputError(f"cannot write model registry {self.path}: {exc.strerror or exc}") from exc
        finally:
            lock.release()

    # -- models -----------------------------------------------------------------------------------------
    def models(self) -> list[RegisteredModel]:
        """Registered models in the order they were added."""
        return list(self.read().models.values())

    @property
    def default(self) -> str | None:
        """Name of the default model, or ``None``."""
        return self.read().default

    def get(self, name: str) -> RegisteredModel:
        """The registered model ``name``; unknown names raise ConfigError listing the registered ones."""
        return _lookup(self.read(), name)

    def add(self, name: str, file: str | os.PathLike[str], *, default: bool = False,
            replace: bool = False) -> RegisteredModel:
        """Register the ``.wsiseg`` checkpoint ``file`` as ``name`` (validated by reading it; imports torch).

        Records its absolute path, sha256 and the base files it needs again. ``default`` makes it the
        default model; ``replace`` allows re-using a registered name. Raises ConfigError (bad or taken
        name), CheckpointError (not a wsiseg checkpoint; official SAM/HIPT files are named as such).
        """
        check_name(name)
        path = Path(file).expanduser().absolute()
        if not path.is_file():
            raise CheckpointError(f"model file not found: {file}")
        if not replace:
            self._check_free(self.read(), name)
        base = _needed_base(path, file)  # outside the lock: reading a checkpoint may take a while
        model = RegisteredModel(name, path, file_sha256(path), base, _now())
        with self._change() as contents:
            if not replace:
                self._check_free(contents, name)
            contents.models[name] = model
            if default:
                contents.default = name
        return model

    @staticmethod
    def _check_free(contents: RegistryContents, name: str) -> None:
        if name in contents.models:
            raise ConfigError(f"a model named {name!r} is already registered ({contents.models[name].path}); "
                              f"pass {option('replace', flag=True)} or remove it first")

    def remove(self, name: str) -> RegisteredModel:
        """Unregister ``name`` (its file is left alone; it stops being the default). ConfigError if
        unknown."""
        with self._change() as contents:
            model = _lookup(contents, name)
            del contents.models[name]
            if contents.default == name:
                contents.default = None
        return model

    def set_default(self, name: str | None) -> None:
        """Make the registered model ``name`` the default (``None``: no default)."""
        with self._change() as contents:
            if name is not None:
                _lookup(contents, name)
            contents.default = name

    # -- base weight files ------------------------------------------------------------------------------
    def base_files(self) -> list[BaseFile]:
        """Registered base weight files in the order they were added."""
        return self.read().base_files

    def register_base_file(self, file: str | os.PathLike[str], encoder: str | None = None) -> BaseFile:
        """Register an official SAM, HIPT or pathology foundation model weights file (kind and encoder
        preset recognised from its layout; imports torch; ``encoder`` names the preset where two share a
        layout, e.g. H-optimus-0/1). Registering a file with the sha256 of a registered one updates its
        path. Raises CheckpointError for files that are none of these."""
        path = Path(file).expanduser().absolute()
        if not path.is_file():
            raise CheckpointError(f"weights file not found: {file}")
        from wsiseg.model.official import identify_base_weights

        kind, encoder = identify_base_weights(path, encoder)
        base = BaseFile(kind, encoder, path, file_sha256(path), _now())
        with self._change() as contents:
            contents.base_files = [b for b in contents.base_files if b.sha256 != base.sha256] + [base]
        return base

    def remove_base_file(self, spec: str) -> BaseFile:
        """Unregister the base file whose path is ``spec`` or whose sha256 starts with ``spec`` (>= 8
        hex digits). ConfigError when none or several match."""
        absolute = str(Path(spec).expanduser().absolute())
        with self._change() as contents:
            matches = [b for b in contents.base_files
                       if str(b.path) == absolute or (len(spec) >= 8 and b.sha256.startswith(spec.lower()))]
            if len(matches) != 1:
                what = "no" if not matches else "several"
                raise ConfigError(f"{what} registered base file(s) match {spec!r}; give its path or a longer "
                                  "sha256 prefix (see `wsiseg models list`)")
            contents.base_files = [b for b in contents.base_files if b.sha256 != matches[0].sha256]
        return matches[0]

    def find_base(self, sha256: str) -> BaseFile | None:
        """The registered base file with this sha256, or ``None``."""
        return next((b for b in self.base_files() if b.sha256 == sha256), None)

    def base_for_encoder(self, encoder: str) -> BaseFile | None:
        """The base file registered last for this encoder preset (e.g. ``sam_vit_b``), or ``None``."""
        return next((b for b in reversed(self.base_files()) if b.encoder == encoder), None)

    def missing_base(self, base: Mapping[str, Mapping[str, str]]) -> list[str]:
        """Kinds of a checkpoint's ``base`` record whose files (by sha256) are not registered."""
        return [k for k, rec in base.items() if self.find_base(str(rec.get("sha256"))) is None]


def _lookup(contents: RegistryContents, name: str) -> RegisteredModel:
    if name not in contents.models:
        known = ", ".join(contents.models) or "none"
        raise ConfigError(f"no registered model {name!r} (registered: {known}); see `wsiseg models list`")
    return contents.models[name]


def _needed_base(path: Path, given: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """The ``base`` record of the ``.wsiseg`` checkpoint at ``path`` (imports torch); official SAM/HIPT
    weights given by mistake raise CheckpointError saying how to register them instead."""
    from wsiseg.model.checkpoint import read_checkpoint
    from wsiseg.model.official import identify_base_weights

    try:
        data = read_checkpoint(path)
    except CheckpointError as exc:
        try:
            kind, encoder = identify_base_weights(path)
        except CheckpointError:
            raise exc from None
        label = weights_label(kind, encoder)
        raise CheckpointError(f"{given} holds official {label} weights ({encoder}), not a wsiseg model: "
                              f"register it as a base file (`wsiseg models add-base {given}`)") from None
    return {k: {"file": str(v.get("file", "")), "sha256": str(v.get("sha256", ""))}
            for k, v in data.base.items() if k in KINDS}
