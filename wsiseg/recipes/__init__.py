"""The training recipes shipped with wsiseg, loadable by name (``bcss``, ``crag``, ``glas-cpu``, and the
paper recipes with a pathology foundation model as Fp: ``bcss-uni``, ``bcss-h-optimus-0``, ``crag-uni``, ...).

``<name>.yaml`` here is a byte-identical copy of ``pipelines/<name>.yaml`` in the source tree (a test keeps
them equal), installed as package data and read through :mod:`importlib.resources`. Files named
``*-classes.yaml`` are class maps that recipes name relative to themselves, not recipes. Torch-free.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from wsiseg.errors import ConfigError, option

#: Suffix of the class-map files beside the recipes (``glas-classes.yaml``); they are not recipes.
CLASS_MAP_SUFFIX = "-classes.yaml"
#: data set -> the paper recipe ``wsiseg train --dataset NAME`` uses without ``--config``
DATASET_RECIPES: dict[str, str] = {"bcss": "bcss", "crag": "crag"}
#: File endings that make a ``--config`` value a path rather than a recipe name.
_PATH_SUFFIXES = (".yaml", ".yml", ".json")


def _package_dir() -> Path:
    """The folder holding the packaged YAML files (a real folder: wheels install unzipped)."""
    root = importlib.resources.files(__name__)
    if not isinstance(root, Path):  # a zipped install: recipes would need extracting, which we do not do
        raise ConfigError(f"packaged recipes are not on the file system ({root}); pass a recipe file path")
    return root


def recipe_names() -> list[str]:
    """Names of the packaged recipes, sorted (``["bcss", "crag", "glas-cpu"]``)."""
    return sorted(p.name[: -len(".yaml")] for p in _package_dir().glob("*.yaml")
                  if not p.name.endswith(CLASS_MAP_SUFFIX))


def recipe_path(name: str) -> Path:
    """The packaged recipe file of ``name`` (e.g. ``bcss``). Unknown names raise ConfigError."""
    names = recipe_names()
    if name not in names:
        raise ConfigError(f"no packaged recipe {name!r}; packaged recipes: {', '.join(names)}")
    return _package_dir() / f"{name}.yaml"


def looks_like_path(value: str) -> bool:
    """True when ``value`` holds a path separator or a recipe file ending (so it is never a name)."""
    return os.sep in value or "/" in value or value.lower().endswith(_PATH_SUFFIXES)


def find_recipe(value: str | os.PathLike[str]) -> Path:
    """``--config`` resolution: a value that looks like a path is that file; otherwise a packaged recipe
    name; otherwise an existing file of that name. Raises ConfigError naming the packaged recipes."""
    text = os.fspath(value)
    if looks_like_path(text):
        return Path(text)  # TrainConfig.from_file reports a missing or bad file
    if text in recipe_names():
        return recipe_path(text)
    if Path(text).is_file():
        return Path(text)
    raise ConfigError(f"{option('config')} {text}: no such file and no packaged recipe of that name "
                      f"(packaged: {', '.join(recipe_names())})")
