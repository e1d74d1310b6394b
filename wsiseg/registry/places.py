"""Where the user's configuration and data sets live: ``$WSISEG_HOME`` and ``$WSISEG_DATA``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from wsiseg.errors import ConfigError, option

ENV_HOME = "WSISEG_HOME"
ENV_MODEL = "WSISEG_MODEL"
ENV_DATA = "WSISEG_DATA"


def config_dir() -> Path:
    """The user's wsiseg config folder: ``$WSISEG_HOME`` when set; else ``$XDG_CONFIG_HOME/wsiseg``
    (default ``~/.config/wsiseg``) on Linux and other Unixes, ``~/Library/Application Support/wsiseg`` on
    macOS, ``%APPDATA%\\wsiseg`` on Windows."""
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
    to give one: the ``data_dir`` option, ``hint`` (another way, e.g. ``"set data_dir in the recipe"``),
    ``$WSISEG_DATA``)."""
    if given is not None:
        return Path(given)
    found = default_data_dir(dataset)
    if found is not None:
        return found
    root = os.environ.get(ENV_DATA)
    ways = [f"pass {option('data_dir')}", *([hint] if hint else []),
            f"set {ENV_DATA} to a folder holding {dataset}/"]
    why = f" ({Path(root).expanduser() / dataset} does not exist)" if root else ""
    raise ConfigError(f"no data folder: {', '.join(ways[:-1])} or {ways[-1]}{why}")
