"""The training run's resume state (``last.state.pt``): written so that reading it can never run code.

Contents (format 2): optimizer, scheduler and grad-scaler state dicts, the RNG states (Python's as a list of
ints, NumPy's as a tensor plus plain numbers, torch's and CUDA's as byte tensors), epoch, best score,
per-epoch history and the recipe, all tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``. Files of format 1 (wsiseg 0.1) pickled NumPy's RNG state as an array;
they are read with :func:`wsiseg.model.torchfile.torch_load_inert` (no code runs; the array is rebuilt from
its bytes), and anything else a file holds that is not plain data is refused with a one-line error.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsiseg.errors import CheckpointError, OutputError, option
from wsiseg.io.atomic import replacing
from wsiseg.model.checkpoint import TRAIN_STATE_FORMAT as FORMAT
from wsiseg.model.torchfile import InertObject, torch_load, torch_load_inert

FORMAT_VERSION = 2
_KEYS = ("optimizer", "scheduler", "scaler", "rng", "epoch", "best_score", "history", "config")


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and plain values."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    keys = np.asarray(npy["keys"].numpy() if isinstance(npy["keys"], torch.Tensor) else npy["keys"],
                      dtype=np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write(path: Path, **parts: Any) -> None:
    """Write the state atomically; ``parts``: :data:`_KEYS` but ``rng``."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "rng": rng_state(), **parts}
    try:
        with replacing(path) as tmp:
            torch.save(payload, tmp)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read(path: Path) -> dict[str, Any]:
    """The state in ``path``; raises CheckpointError (one line) for anything that is not one."""
    what = "training state"
    try:
        obj = torch_load(path, what)
    except CheckpointError as exc:
        if "Unsupported global" not in str(exc):
            raise
        obj = _legacy(torch_load_inert(path, what), path)
    if not isinstance(obj, dict) or any(k not in obj for k in _KEYS):
        raise CheckpointError(f"{path} is not a wsiseg training state; start a new run in another "
                              f"{option('out')}")
    return obj


def _legacy(obj: Any, path: Path) -> dict[str, Any]:
    """A format-1 state (NumPy's RNG keys pickled as an array) with the array rebuilt from its bytes."""
    refuse = CheckpointError(f"{path} holds Python objects other than a wsiseg training state; it is not "
                             f"read (a file from elsewhere?). Start a new run in another {option('out')}")
    try:
        rng = obj["rng"]
        name, array, pos, has_gauss, cached = rng["numpy"]
        _, shape, dtype, _, raw = array.state
        if not (isinstance(array, InertObject) and array.qualname.endswith("_reconstruct")
                and isinstance(dtype, InertObject) and dtype.qualname == "numpy.dtype"
                and isinstance(raw, bytes)):
            raise refuse
        keys = np.frombuffer(raw, dtype=np.dtype(str(dtype.args[0]))).reshape(tuple(shape))
        version, internal, gauss = rng["python"]
        rng["python"] = {"version": version, "state": list(internal), "gauss": gauss}
        rng["numpy"] = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                        "has_gauss": has_gauss, "cached_gaussian": cached}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise refuse from exc
    if _has_inert(obj):
        raise refuse
    return dict(obj)


def _has_inert(value: Any) -> bool:
    if isinstance(value, InertObject):
        return True
    if isinstance(value, dict):
        return any(_has_inert(k) or _has_inert(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_inert(v) for v in value)
    return False
