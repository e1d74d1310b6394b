"""Private helpers: reading torch files safely, hashing, and copying tensors into modules with checks."""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wsiseg.errors import CheckpointError

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file (cached per path, size and mtime within the process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


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
