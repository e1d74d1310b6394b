"""Private helpers: reading torch and safetensors files safely, copying tensors into modules with checks."""

from __future__ import annotations

import argparse
import os
import pickle
import types
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch

from wsiseg.errors import CheckpointError
from wsiseg.model._torch_allowlist import allowed_globals


def torch_load(path: str | os.PathLike[str], what: str) -> Any:
    """``torch.load`` on CPU with ``weights_only=True`` (argparse.Namespace allowed, as in DINO files).

    Any failure (missing, not a torch file, truncated, foreign pickled objects) raises CheckpointError.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what} not found: {p}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
        unsupported = next((ln for ln in lines if "Unsupported global" in ln), None)
        if unsupported is not None:  # a pickle with arbitrary Python objects: name what it holds
            reason = unsupported[:200]
        elif _looks_truncated(p):
            reason = "the file is truncated (incomplete download or copy?)"
        else:
            reason = "not a PyTorch checkpoint file"
        raise CheckpointError(f"{p} is not a readable {what}: {reason}") from exc


#: the first bytes of a safetensors file are an 8-byte little-endian header length, then a JSON "{"
_SAFETENSORS_JSON_START = b"{"


def is_safetensors(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a safetensors file (by its header, not its name)."""
    with Path(path).open("rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != _SAFETENSORS_JSON_START:
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= Path(path).stat().st_size - 8


def safetensors_load(path: str | os.PathLike[str], what: str) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (no pickle, no code: the format holds tensors and a JSON header
    only), on CPU. Any failure (missing, truncated, malformed header) raises CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what} not found: {p}")
    try:
        return dict(load_file(p, device="cpu"))
    except (SafetensorError, OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{p} is not a readable {what}: {detail}") from exc


def weights_load(path: str | os.PathLike[str], what: str) -> Any:
    """A weights file as published: safetensors (tensors only) or a PyTorch ``.bin``/``.pth`` read with
    :func:`torch_load` (weights only). Failures raise CheckpointError."""
    p = Path(path)
    if p.is_file() and is_safetensors(p):
        return safetensors_load(p, what)
    return torch_load(p, what)


class InertObject:
    """Stands in for every Python object a pickle names that is not a tensor: built, filled and given its
    state without running any code of the file (:func:`torch_load_inert`). ``qualname`` says what it
    replaced; ``args``, ``items`` and ``state`` keep what the pickle gave it (tensors included)."""

    qualname = "?"
    args: tuple[Any, ...]
    items: dict[Any, Any]
    elements: list[Any]
    state: Any

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:  # pickle's NEWOBJ skips __init__
        obj = super().__new__(cls)
        obj.args, obj.items, obj.elements, obj.state = args, {}, [], None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


class _InertUnpickler(pickle.Unpickler):
    """Resolves only torch's weights-only allowlist; every other global becomes an :class:`InertObject`
    subclass named after it, so no callable of the file's choosing ever runs."""

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        allowed = allowed_globals()  # torch's own weights-only allowlist (see _torch_allowlist)
        if full in allowed:
            return allowed[full]
        return type(name, (InertObject,), {"qualname": full})


def _inert_pickle_module() -> types.ModuleType:
    module = types.ModuleType("wsiseg_inert_pickle")

    def load(file: IO[bytes], **kwargs: Any) -> Any:
        return _InertUnpickler(file, **kwargs).load()

    module.Unpickler = _InertUnpickler  # type: ignore[attr-defined]
    module.load = load  # type: ignore[attr-defined]
    module.__dict__["UnpicklingError"] = pickle.UnpicklingError
    return module


def torch_load_inert(path: str | os.PathLike[str], what: str) -> Any:
    """Read a torch file that holds arbitrary pickled Python objects besides its tensors (e.g. a PyTorch
    Lightning checkpoint's ``hyper_parameters``) without executing anything from it: tensors are rebuilt as
    usual, every other object becomes an :class:`InertObject`. Failures raise CheckpointError."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what} not found: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=False, pickle_module=_inert_pickle_module())
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        reason = ("the file is truncated (incomplete download or copy?)" if _looks_truncated(p)
                  else "not a PyTorch checkpoint file")
        raise CheckpointError(f"{p} is not a readable {what}: {reason}") from exc


def _looks_truncated(path: Path) -> bool:
    """True for a zip-format torch file whose central directory (at the end) is missing."""
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return False
        f.seek(max(0, path.stat().st_size - 65_536))
        return b"PK\x05\x06" not in f.read()


def as_state_dict(obj: Any, path: str | os.PathLike[str], what: str) -> dict[str, torch.Tensor]:
    """Check that ``obj`` is a mapping of str -> tensor, else raise CheckpointError."""
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} is not a {what}: expected a dict of tensors, got {type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(
                f"{path} is not a {what}: entry {k!r} is a {type(v).__name__}, not a tensor")
    return dict(obj)


def check_layout(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size],
                 path: str | os.PathLike[str], what: str, ignored_prefixes: tuple[str, ...] = ()) -> None:
    """Raise CheckpointError naming the first missing key, shape mismatch or unexpected key."""
    for key, shape in expected.items():
        if key not in state:
            raise CheckpointError(f"{path}: {what} lacks key {key!r} (expected shape {list(shape)})")
        if state[key].shape != shape:
            raise CheckpointError(
                f"{path}: {what} key {key!r} has shape {list(state[key].shape)}, expected {list(shape)}"
            )
    for key in state:
        if key not in expected and not key.startswith(ignored_prefixes):
            raise CheckpointError(f"{path}: unexpected key {key!r} in {what}")


def copy_into(module: torch.nn.Module, values: Mapping[str, torch.Tensor]) -> None:
    """Copy tensors into ``module``'s parameters/buffers by name (shapes already checked)."""
    own = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, value in values.items():
            own[key].copy_(value.to(own[key].dtype))
