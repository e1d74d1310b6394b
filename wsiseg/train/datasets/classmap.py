"""Reading the small YAML/JSON files that name classes: folder class maps and BCSS grouping files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from wsiseg.classes import DEFAULT_COLORS, ClassList, check_class_name
from wsiseg.errors import ClassMismatchError, DatasetError

RGB = tuple[int, int, int]


def read_structured(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A YAML or JSON file holding a mapping; :class:`DatasetError` when missing or malformed, or when it
    has top-level keys other than ``keys`` (when given)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                           f"{str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path} must hold a mapping at the top level")
    unknown = set(data) - set(keys or data)
    if unknown:
        raise DatasetError(f"{path}: unknown key(s) {sorted(unknown)}; expected {', '.join(keys or ())}")
    return data


def _color(value: Any, where: str) -> RGB:
    if not (isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int) for v in value)):
        raise DatasetError(f"{where}: colour must be [r, g, b] integers, got {value!r}")
    return int(value[0]), int(value[1]), int(value[2])


def _check_name(name: Any, path: Path) -> str:
    """A class name from ``path`` that QuPath can use (:func:`~wsiseg.classes.check_class_name`)."""
    try:
        return check_class_name(str(name) if name is not None else "")
    except ClassMismatchError as exc:
        raise DatasetError(f"{path}: {exc}") from exc


def read_mapping_file(path: Path) -> tuple[dict[str, list[int]], dict[str, RGB]]:
    """A BCSS grouping file: ``classes: {name: [codes]}``, optional ``colors: {name: [r, g, b]}``."""
    data = read_structured(path, ("classes", "colors"))
    groups = data.get("classes")
    if not isinstance(groups, dict) or not groups:
        raise DatasetError(f"{path}: 'classes' must map class names to lists of mask codes")
    out: dict[str, list[int]] = {}
    for name, codes in groups.items():
        _check_name(name, path)
        if not isinstance(codes, list) or not all(isinstance(c, int) for c in codes):
            raise DatasetError(f"{path}: class {name!r} must list integer mask codes")
        out[str(name)] = [int(c) for c in codes]
    colors = {str(k): _color(v, f"{path}: class {k!r}") for k, v in (data.get("colors") or {}).items()}
    return out, colors


def read_class_map(path: Path) -> tuple[ClassList, np.ndarray, np.ndarray]:
    """A folder data set's class map -> ``(classes, lut, known)``.

    Format (YAML or JSON)::

        classes:
          - {name: background, value: 0, color: [255, 255, 255]}
          - {name: gland, values: [1, 255], color: [200, 0, 0]}   # several mask values -> one class
        ignore: [128]        # optional: mask values that mean "unlabelled"

    ``lut`` maps every mask value 0..255 to a class index (ignore values -> ``ignore_index``); ``known`` marks
    the values the file names (other values in a mask are an error).
    """
    data = read_structured(path, ("classes", "ignore"))
    entries = data.get("classes")
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{path}: 'classes' must be a list of {{name, value(s), color}} entries")
    names: list[str] = []
    colors: list[RGB] = []
    values: list[list[int]] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "name" not in entry:
            raise DatasetError(f"{path}: class entry {i} needs a name")
        extra = set(entry) - {"name", "value", "values", "color"}
        if extra:
            raise DatasetError(f"{path}: class {entry['name']!r} has unknown key(s) {sorted(extra)}")
        vals = entry.get("values", [entry["value"]] if "value" in entry else None)
        ok = isinstance(vals, list) and vals and all(isinstance(v, int) and 0 <= v <= 255 for v in vals)
        if not ok:
            raise DatasetError(f"{path}: class {entry['name']!r} needs value(s) in 0..255")
        names.append(_check_name(entry["name"], path))
        colors.append(_color(entry["color"], f"{path}: class {entry['name']!r}") if "color" in entry
                      else DEFAULT_COLORS[i % len(DEFAULT_COLORS)])
        values.append([int(v) for v in vals or []])
    classes = ClassList.from_names(names, colors)
    lut = np.full(256, classes.ignore_index, dtype=np.uint8)
    known = np.zeros(256, dtype=bool)
    for idx, vals in enumerate(values):
        for v in vals:
            if known[v]:
                raise DatasetError(f"{path}: mask value {v} is assigned twice")
            lut[v] = idx
            known[v] = True
    ignore = data.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(v, int) and 0 <= v <= 255 for v in ignore):
        raise DatasetError(f"{path}: 'ignore' must list mask values in 0..255")
    for v in ignore:
        if known[v]:
            raise DatasetError(f"{path}: mask value {v} is both a class and ignored")
        known[v] = True
    return classes, lut, known
