"""The user's model registry: named ``.wsiseg`` models, a default model, and the official base weight files.

One human-readable JSON file, ``registry.json``, in the user's config directory (:func:`config_dir`):
``$WSISEG_HOME`` when set; else ``$XDG_CONFIG_HOME/wsiseg`` (default ``~/.config/wsiseg``) on Linux and
other Unixes, ``~/Library/Application Support/wsiseg`` on macOS, ``%APPDATA%\\wsiseg`` on Windows. It is
rewritten atomically (a temporary file in the same folder, then ``os.replace``), so an interrupted write
never leaves half a file. Layout (``format_version`` 1)::

    {"format": "wsiseg-registry", "format_version": 1, "default": "bcss",
     "models": {"bcss": {"path": "/abs/best.wsiseg", "sha256": "...", "added": "ISO time",
                         "base": {"sam": {"file": "sam_vit_b_01ec64.pth", "sha256": "..."}, ...}}},
     "base_files": [{"kind": "sam", "encoder": "sam_vit_b", "path": "/abs/sam_vit_b_01ec64.pth",
                     "sha256": "...", "added": "ISO time"}, ...]}

``base`` lists what a slim checkpoint needs again (the encoders it does not store); registered base files
are found again by sha256 when such a model is loaded, and by encoder preset when training.

Environment: ``WSISEG_HOME`` (the folder above), ``WSISEG_MODEL`` (the model ``wsiseg segment`` uses
without ``--model``: a registered name or a path; it comes before the registry's default) and
``WSISEG_DATA`` (data sets live in ``$WSISEG_DATA/<dataset>``, the default of ``--data-dir``).

Torch-free at import time: registering a model or a base file reads it with torch (imported then).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsiseg.errors import CheckpointError, ConfigError, OutputError
from wsiseg.io.atomic import write_text

ENV_HOME = "WSISEG_HOME"
ENV_MODEL = "WSISEG_MODEL"
ENV_DATA = "WSISEG_DATA"
REGISTRY_FILE = "registry.json"
FORMAT = "wsiseg-registry"
FORMAT_VERSION = 1
#: Kinds of base weight files, as in a checkpoint's ``base`` record.
KINDS = ("sam", "hipt")
_FLAGS = {"sam": "--sam-checkpoint", "hipt": "--hipt-checkpoint"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
#: File endings that make a model spec a path rather than a registered name.
_MODEL_SUFFIXES = (".wsiseg", ".pt", ".pth", ".ckpt")

#: One line listing the three ways of choosing a model for ``wsiseg segment``.
NO_MODEL_MESSAGE = ("no model given: pass --model NAME|FILE, set WSISEG_MODEL=NAME|FILE, or register a "
                    "default once with `wsiseg models add NAME FILE --default`")


@dataclass(frozen=True)
class OfficialWeights:
    """A published pretrained weights file that a full-size encoder preset is meant to start from."""

    kind: str  # "sam" | "hipt"
    encoder: str  # encoder preset (wsiseg.model.presets)
    file: str  # the file's published name
    title: str  # what it is, for messages
    url: str  # where to download it


#: encoder preset -> the official file it loads (tiny presets have none: they are random by design)
OFFICIAL_WEIGHTS: dict[str, OfficialWeights] = {w.encoder: w for w in (
    OfficialWeights("sam", "sam_vit_b", "sam_vit_b_01ec64.pth", "SAM ViT-B",
                    "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"),
    OfficialWeights("sam", "sam_vit_l", "sam_vit_l_0b3195.pth", "SAM ViT-L",
                    "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth"),
    OfficialWeights("sam", "sam_vit_h", "sam_vit_h_4b8939.pth", "SAM ViT-H",
                    "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"),
    OfficialWeights("hipt", "hipt_vit_s", "vit256_small_dino.pth", "HIPT ViT-S/16",
                    "https://github.com/mahmoodlab/HIPT/raw/master/HIPT_4K/Checkpoints/vit256_small_dino.pth"),
)}


@dataclass(frozen=True)
class RegisteredModel:
    """A named model: ``path`` (absolute) of a ``.wsiseg`` file, its ``sha256`` when registered, and the
    ``base`` files it needs again ({"sam"|"hipt": {"file", "sha256"}}; empty when self-contained)."""

    name: str
    path: Path
    sha256: str
    base: dict[str, dict[str, str]] = field(default_factory=dict)
    added: str = ""


@dataclass(frozen=True)
class BaseFile:
    """A registered official weights file: ``kind`` "sam"|"hipt", its ``encoder`` preset (e.g.
    ``sam_vit_b``), absolute ``path`` and ``sha256``."""

    kind: str
    encoder: str
    path: Path
    sha256: str
    added: str = ""


@dataclass(frozen=True)
class ResolvedModel:
    """What a model spec resolved to: the checkpoint ``path`` and the base weight files it needs (given
    ones first, then registered ones found by sha256; ``None`` where not needed). ``name`` is the
    registered name, if it was one; ``source`` says where the spec came from (``--model``,
    ``WSISEG_MODEL`` or ``default``)."""

    path: Path
    sam_checkpoint: Path | None = None
    hipt_checkpoint: Path | None = None
    name: str | None = None
    source: str = "--model"


@dataclass(frozen=True)
class TrainingWeights:
    """Base weights for a fresh model: per kind the file to load (given, else registered for the
    encoder preset, else ``None``) and the ``missing`` official files a full-size encoder should load."""

    sam_checkpoint: Path | None
    hipt_checkpoint: Path | None
    missing: tuple[OfficialWeights, ...] = ()


def config_dir() -> Path:
    """The user's wsiseg config folder: ``$WSISEG_HOME``, else the platform's rule (module docstring)."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA")
        return Path(appdata) / "wsiseg" if appdata else Path.home() / "AppData" / "Roaming" / "wsiseg"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "wsiseg"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".config"
    return base / "wsiseg"


def default_data_dir(dataset: str) -> Path | None:
    """``$WSISEG_DATA/<dataset>`` when ``WSISEG_DATA`` is set and that folder exists, else ``None``."""
    root = os.environ.get(ENV_DATA)
    if not root:
        return None
    path = Path(root).expanduser() / dataset
    return path if path.is_dir() else None


def find_data_dir(dataset: str, given: str | os.PathLike[str] | None, *, hint: str = "") -> Path:
    """``given`` when set, else :func:`default_data_dir`; neither raises ConfigError (one line saying how
    to give one; ``hint`` adds another way, e.g. ``"set data_dir in the recipe"``)."""
    if given is not None:
        return Path(given)
    found = default_data_dir(dataset)
    if found is not None:
        return found
    root = os.environ.get(ENV_DATA)
    ways = ["pass --data-dir", *([hint] if hint else []), f"set {ENV_DATA} to a folder holding {dataset}/"]
    why = f" ({Path(root).expanduser() / dataset} does not exist)" if root else ""
    raise ConfigError(f"no data folder: {', '.join(ways[:-1])} or {ways[-1]}{why}")


def looks_like_model_path(spec: str) -> bool:
    """True when ``spec`` holds a path separator or a checkpoint file ending (so it is never a name)."""
    return os.sep in spec or "/" in spec or spec.lower().endswith(_MODEL_SUFFIXES)


def check_name(name: str) -> str:
    """Return ``name`` if it can be a registered model name, else raise ConfigError."""
    if not _NAME_RE.match(name) or looks_like_model_path(name) or name == "null":
        raise ConfigError(f"invalid model name {name!r}: use letters, digits and . _ + - (not 'null', no "
                          f"path separator, no {'/'.join(_MODEL_SUFFIXES)} ending)")
    return name


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _short(sha256: str) -> str:
    return f"{sha256[:12]}..."


class Registry:
    """The registry file in ``home`` (default :func:`config_dir`), read on every call (it is small), so
    several processes see each other's changes; a missing file is an empty registry.

    A corrupt or unreadable file raises ConfigError (one line naming the file); a file that cannot be
    written raises OutputError.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home) if home is not None else config_dir()
        self.path = self.home / REGISTRY_FILE

    # -- the file ---------------------------------------------------------------------------------------
    def _corrupt(self, why: str) -> ConfigError:
        return ConfigError(f"model registry {self.path} is corrupt ({why}); fix it, or delete it to start "
                           "afresh (then register models again)")

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"format": FORMAT, "format_version": FORMAT_VERSION, "default": None, "models": {},
                    "base_files": []}
        except OSError as exc:
            raise ConfigError(f"cannot read model registry {self.path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._corrupt(f"not JSON: {exc.msg} at line {exc.lineno}") from exc
        self._check(data)
        return dict(data)

    def _check(self, data: Any) -> None:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise self._corrupt(f"not a {FORMAT} file")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ConfigError(f"model registry {self.path} has format version {version!r}, newer than this "
                              f"wsiseg supports ({FORMAT_VERSION}); upgrade wsiseg")
        models, bases, default = data.get("models"), data.get("base_files"), data.get("default")
        if not isinstance(models, dict) or not isinstance(bases, list):
            raise self._corrupt("'models' must be a mapping and 'base_files' a list")
        for name, entry in models.items():
            ok = (isinstance(entry, dict) and isinstance(entry.get("path"), str)
                  and isinstance(entry.get("sha256"), str) and isinstance(entry.get("base", {}), dict)
                  and all(k in KINDS and isinstance(v, dict) for k, v in entry.get("base", {}).items()))
            if not ok:
                raise self._corrupt(f"model {name!r} needs 'path', 'sha256' and a 'base' mapping")
        for i, entry in enumerate(bases):
            ok = (isinstance(entry, dict) and entry.get("kind") in KINDS
                  and all(isinstance(entry.get(k), str) for k in ("encoder", "path", "sha256")))
            if not ok:
                raise self._corrupt(f"base file #{i + 1} needs 'kind' (sam|hipt), 'encoder', 'path', "
                                    "'sha256'")
        if default is not None and (not isinstance(default, str) or default not in models):
            raise self._corrupt(f"the default {default!r} is not a registered model")

    def _save(self, data: dict[str, Any]) -> None:
        text = json.dumps(data, indent=2, sort_keys=False) + "\n"
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            write_text(self.path, text, fsync=True)
        except OSError as exc:
            raise OutputError(f"cannot write model registry {self.path}: {exc.strerror or exc}") from exc

    # -- models -----------------------------------------------------------------------------------------
    @staticmethod
    def _model(name: str, entry: dict[str, Any]) -> RegisteredModel:
        return RegisteredModel(name, Path(entry["path"]), entry["sha256"],
                               {k: dict(v) for k, v in entry.get("base", {}).items()}, entry.get("added", ""))

    def models(self) -> list[RegisteredModel]:
        """Registered models in the order they were added."""
        return [self._model(n, e) for n, e in self._load()["models"].items()]

    @property
    def default(self) -> str | None:
        """Name of the default model, or ``None``."""
        value = self._load().get("default")
        return None if value is None else str(value)

    def get(self, name: str) -> RegisteredModel:
        """The registered model ``name``; unknown names raise ConfigError listing the registered ones."""
        models = self._load()["models"]
        if name not in models:
            known = ", ".join(models) or "none"
            raise ConfigError(f"no registered model {name!r} (registered: {known}); see `wsiseg models list`")
        return self._model(name, models[name])

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
        if not replace and name in self._load()["models"]:
            raise ConfigError(f"a model named {name!r} is already registered "
                              f"({self.get(name).path}); pass --replace or remove it first")
        from wsiseg.model.checkpoint import read_checkpoint
        from wsiseg.model.official import identify_base_weights

        try:
            data = read_checkpoint(path)
        except CheckpointError as exc:
            try:  # official weights given by mistake: say how to register them instead
                kind, encoder = identify_base_weights(path)
            except CheckpointError:
                raise exc from None
            raise CheckpointError(f"{file} holds official {kind.upper()} weights ({encoder}), not a wsiseg "
                                  f"model: register it with `wsiseg models add-base {file}`") from None
        base = {k: {"file": str(v.get("file", "")), "sha256": str(v.get("sha256", ""))}
                for k, v in data.base.items() if k in KINDS}
        entry = {"path": str(path), "sha256": file_sha256(path), "added": _now(), "base": base}
        reg = self._load()  # read again: the checkpoint may have taken a while
        reg["models"][name] = entry
        if default:
            reg["default"] = name
        self._save(reg)
        return self._model(name, entry)

    def remove(self, name: str) -> RegisteredModel:
        """Unregister ``name`` (its file is left alone; it stops being the default). ConfigError if
        unknown."""
        model = self.get(name)
        reg = self._load()
        del reg["models"][name]
        if reg.get("default") == name:
            reg["default"] = None
        self._save(reg)
        return model

    def set_default(self, name: str | None) -> None:
        """Make the registered model ``name`` the default (``None``: no default)."""
        if name is not None:
            self.get(name)
        reg = self._load()
        reg["default"] = name
        self._save(reg)

    # -- base weight files ------------------------------------------------------------------------------
    def base_files(self) -> list[BaseFile]:
        """Registered base weight files in the order they were added."""
        return [BaseFile(e["kind"], e["encoder"], Path(e["path"]), e["sha256"], e.get("added", ""))
                for e in self._load()["base_files"]]

    def register_base_file(self, file: str | os.PathLike[str]) -> BaseFile:
        """Register an official SAM or HIPT weights file (kind and encoder preset recognised from its
        layout; imports torch). Registering a file with the sha256 of a registered one updates its path.
        Raises CheckpointError for files that are not official SAM/HIPT weights."""
        path = Path(file).expanduser().absolute()
        if not path.is_file():
            raise CheckpointError(f"weights file not found: {file}")
        from wsiseg.model.official import identify_base_weights

        kind, encoder = identify_base_weights(path)
        entry = {"kind": kind, "encoder": encoder, "path": str(path), "sha256": file_sha256(path),
                 "added": _now()}
        reg = self._load()
        reg["base_files"] = [e for e in reg["base_files"] if e["sha256"] != entry["sha256"]] + [entry]
        self._save(reg)
        return BaseFile(kind, encoder, path, entry["sha256"], entry["added"])

    def remove_base_file(self, spec: str) -> BaseFile:
        """Unregister the base file whose path is ``spec`` or whose sha256 starts with ``spec`` (>= 8
        hex digits). ConfigError when none or several match."""
        absolute = str(Path(spec).expanduser().absolute())
        matches = [b for b in self.base_files()
                   if str(b.path) == absolute or (len(spec) >= 8 and b.sha256.startswith(spec.lower()))]
        if len(matches) != 1:
            what = "no" if not matches else "several"
            raise ConfigError(f"{what} registered base file(s) match {spec!r}; give its path or a longer "
                              "sha256 prefix (see `wsiseg models list`)")
        reg = self._load()
        reg["base_files"] = [e for e in reg["base_files"] if e["sha256"] != matches[0].sha256]
        self._save(reg)
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

    # -- resolution -------------------------------------------------------------------------------------
    def resolve_model(self, spec: str | None, *, sam_checkpoint: str | os.PathLike[str] | None = None,
                      hipt_checkpoint: str | os.PathLike[str] | None = None) -> ResolvedModel:
        """Turn a model spec into a checkpoint path plus the base files it needs.

        ``spec``: a registered name, or a checkpoint path (a value with a path separator or a
        ``.wsiseg``/``.pt``/``.pth``/``.ckpt`` ending is always a path; a bare word is a registered name
        first, then a file of that name). ``None``: ``$WSISEG_MODEL``, else the registry's default, else
        ConfigError (:data:`NO_MODEL_MESSAGE`). ``sam_checkpoint``/``hipt_checkpoint`` are used as given;
        base files a slim checkpoint needs beyond them are looked up among the registered ones by sha256
        (a path spec's checkpoint is read for that, with torch). Raises ConfigError (unknown name,
        corrupt registry) and CheckpointError (missing file, needed base file neither given nor registered).
        """
        source = "--model"
        if spec is None:
            env = os.environ.get(ENV_MODEL)
            if env:
                spec, source = env, ENV_MODEL
            else:
                spec, source = self.default, "default"
                if spec is None:
                    raise ConfigError(NO_MODEL_MESSAGE)
        path, record = self._locate(spec, source)
        given: dict[str, Path | None] = {"sam": _path(sam_checkpoint), "hipt": _path(hipt_checkpoint)}
        if record is not None:
            needs = record.base
        elif all(given.values()):
            needs = {}
        else:
            from wsiseg.model.checkpoint import read_checkpoint

            needs = read_checkpoint(path).base
        for kind, rec in needs.items():
            if kind not in given or given[kind] is not None:
                continue
            found = self.find_base(str(rec.get("sha256")))
            if found is None:
                raise CheckpointError(
                    f"model {spec} is slim: it needs the {kind.upper()} weights {rec.get('file')!r} "
                    f"(sha256 {_short(str(rec.get('sha256')))}), which are not registered: pass "
                    f"{_FLAGS[kind]} FILE or register the file once with `wsiseg models add-base FILE`")
            if not found.path.is_file():
                raise CheckpointError(f"the registered {kind.upper()} weights {found.path} are missing; "
                                      f"register them again with `wsiseg models add-base FILE`")
            given[kind] = found.path
        return ResolvedModel(path, given["sam"], given["hipt"], record.name if record else None, source)

    def _locate(self, spec: str, source: str) -> tuple[Path, RegisteredModel | None]:
        """The checkpoint path of a spec, with its registry record when it is a registered name."""
        if not looks_like_model_path(spec):
            models = self._load()["models"]
            if spec in models:
                record = self._model(spec, models[spec])
                if not record.path.is_file():
                    raise CheckpointError(
                        f"registered model {spec!r} points to {record.path}, which does not exist; register "
                        f"it again (`wsiseg models add {spec} FILE --replace`) or remove it")
                return record.path, record
            if not Path(spec).is_file():
                if source == ENV_MODEL:
                    raise ConfigError(f"WSISEG_MODEL={spec}: no such file and no registered model of that "
                                      f"name (registered: {', '.join(models) or 'none'})")
                raise ConfigError(f"unknown model {spec!r}: not a registered name (registered: "
                                  f"{', '.join(models) or 'none'}) nor a file; see `wsiseg models list`")
        path = Path(spec).expanduser()
        if not path.is_file():
            if source == ENV_MODEL:
                raise CheckpointError(f"WSISEG_MODEL={spec}: no such model file")
            raise CheckpointError(f"model file not found: {spec}")
        return path, None

    def training_weights(self, encoders: Mapping[str, str | None], *,
                         sam_checkpoint: str | os.PathLike[str] | None = None,
                         hipt_checkpoint: str | os.PathLike[str] | None = None) -> TrainingWeights:
        """Base weights for a fresh model whose encoder presets are ``encoders`` ({"sam": "sam_vit_b",
        "hipt": "hipt_vit_s"}; ``None`` for an encoder the model lacks): the given file, else the one
        registered for that preset, else ``None``; ``missing`` lists the official files of full-size
        presets (:data:`OFFICIAL_WEIGHTS`) that are neither given nor registered. The registry is read only
        when a file is not given."""
        chosen: dict[str, Path | None] = {"sam": _path(sam_checkpoint), "hipt": _path(hipt_checkpoint)}
        missing: list[OfficialWeights] = []
        for kind in KINDS:
            encoder = encoders.get(kind)
            if encoder is None or chosen[kind] is not None:
                continue
            found = self.base_for_encoder(encoder)
            if found is not None and not found.path.is_file():
                raise CheckpointError(f"the registered {kind.upper()} weights {found.path} are missing; "
                                      f"register them again with `wsiseg models add-base FILE`")
            chosen[kind] = found.path if found is not None else None
            if chosen[kind] is None and encoder in OFFICIAL_WEIGHTS:
                missing.append(OFFICIAL_WEIGHTS[encoder])
        return TrainingWeights(chosen["sam"], chosen["hipt"], tuple(missing))


def _path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


def resolve_model(spec: str | None, *, sam_checkpoint: str | os.PathLike[str] | None = None,
                  hipt_checkpoint: str | os.PathLike[str] | None = None) -> ResolvedModel:
    """:meth:`Registry.resolve_model` on the user's registry (:func:`config_dir`)."""
    return Registry().resolve_model(spec, sam_checkpoint=sam_checkpoint, hipt_checkpoint=hipt_checkpoint)


def register_base_file(file: str | os.PathLike[str]) -> BaseFile:
    """:meth:`Registry.register_base_file` on the user's registry (:func:`config_dir`)."""
    return Registry().register_base_file(file)
