"""Read one level of a wsiseg OME-Zarr segmentation: the label array, its probabilities and its geometry.

This is the only place that knows the OME-Zarr layout (``docs/architecture.md``, wsiseg.infer). Everything
else in :mod:`wsiseg.export` consumes a :class:`LabelSource`, so switching to the reader of
:mod:`wsiseg.infer` is a change in :func:`open_label_source` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import zarr

from wsiseg.classes import ClassList
from wsiseg.errors import ConfigError, OutputError

#: Relative tolerance when choosing a level by mpp (a level counts as "not coarser" within it).
_MPP_RTOL = 1e-3


class BlockArray(Protocol):
    """The part of a zarr/numpy array used here: a shape and numpy slicing."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: Any) -> Any: ...


@dataclass(frozen=True)
class LabelSource:
    """One pyramid level of a segmentation.

    ``labels`` is a ``(y, x)`` uint8 array at this level (0 = not analysed, ``i + 1`` = class ``i``);
    ``probabilities`` the ``(c, y, x)`` uint8 array (0..255 per class) of the same level, or ``None``.
    ``mpp_x``/``mpp_y`` are um/px of this level; ``downsample_x``/``downsample_y`` are slide level-0 pixels
    per pixel of this level (multiply level coordinates by them to get level-0 coordinates).
    ``slide_id`` identifies the slide for stable feature ids.
    """

    labels: BlockArray
    probabilities: BlockArray | None
    classes: ClassList
    level: int
    n_levels: int
    mpp_x: float
    mpp_y: float
    downsample_x: float
    downsample_y: float
    slide_id: str

    @property
    def height(self) -> int:
        return int(self.labels.shape[0])

    @property
    def width(self) -> int:
        return int(self.labels.shape[1])


def _attrs(node: Any) -> dict[str, Any]:
    attrs = dict(node.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, dict):  # NGFF 0.5 (zarr v3): metadata under "ome"
        merged = dict(ome)
        merged.update({k: v for k, v in attrs.items() if k != "ome"})
        return merged
    return attrs


def _level_scales(multiscales: Any, n: int) -> list[tuple[str, float, float] | None]:
    """Per dataset: (path, y scale um, x scale um) from NGFF coordinateTransformations, or None."""
    out: list[tuple[str, float, float] | None] = []
    try:
        datasets = multiscales[0]["datasets"]
    except (KeyError, IndexError, TypeError):
        return [None] * n
    for ds in datasets:
        scale = None
        for t in ds.get("coordinateTransformations", []):
            if t.get("type") == "scale":
                scale = t.get("scale")
        if scale is None or len(scale) < 2:
            out.append(None)
        else:
            out.append((str(ds["path"]), float(scale[-2]), float(scale[-1])))
    return out


def _pair(value: Any) -> tuple[float, float] | None:
    """An mpp given as a number or an (x, y) pair."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if isinstance(value, (list, tuple)) and len(value) >= 2:
        return float(value[0]), float(value[1])
    return None


def choose_level(level_mpps: list[float], level: int | None, mpp: float | None) -> int:
    """Pick a pyramid level: ``level`` as given, or the coarsest level not coarser than ``mpp`` (um/px).

    With neither, level 0 (the exact, full-resolution labels). Raises :class:`ConfigError` for both, an
    out-of-range level or a non-positive mpp.
    """
    if level is not None and mpp is not None:
        raise ConfigError("give either a level or an mpp, not both")
    if level is not None:
        if not 0 <= level < len(level_mpps):
            raise ConfigError(f"level {level} does not exist; the segmentation has levels "
                              f"0..{len(level_mpps) - 1}")
        return level
    if mpp is not None:
        if not (mpp > 0 and math.isfinite(mpp)):
            raise ConfigError(f"mpp must be a positive number, got {mpp}")
        candidates = [i for i, m in enumerate(level_mpps) if m <= mpp * (1 + _MPP_RTOL)]
        return max(candidates) if candidates else 0
    return 0


def open_label_source(zarr_path: str | Path, *, level: int | None = None,
                      mpp: float | None = None) -> LabelSource:
    """Open the label pyramid of a wsiseg segmentation at one level (see :func:`choose_level`).

    Raises :class:`OutputError` when the path is not a readable wsiseg segmentation.
    """
    path = Path(zarr_path)
    if not path.exists():
        raise OutputError(f"segmentation not found: {path}")
    root: Any
    label_group: Any
    try:
        root = zarr.open_group(str(path), mode="r")
        label_group = root["labels/classes"]
    except Exception as exc:  # zarr raises several types for missing/foreign stores
        raise OutputError(f"{path} is not a wsiseg OME-Zarr segmentation (no labels/classes): {exc}") from exc
    root_attrs = _attrs(root)
    label_attrs = _attrs(label_group)
    meta = root_attrs.get("wsiseg")
    if not isinstance(meta, dict) or "classes" not in meta:
        raise OutputError(f"{path} has no wsiseg class list in its attributes; "
                          "was it written by wsiseg segment?")
    classes = ClassList.from_dict(meta["classes"])

    label_ms = label_attrs.get("multiscales")
    n_levels = len(list(label_group.array_keys()))
    scales = _level_scales(label_ms, n_levels)
    paths = [s[0] if s else str(i) for i, s in enumerate(scales)]
    level0: Any
    try:
        level0 = label_group[paths[0]]
    except Exception as exc:
        raise OutputError(f"{path}: label level 0 is missing: {exc}") from exc
    out_mpp = _pair(meta.get("mpp"))
    if out_mpp is None:
        out_mpp = (scales[0][2], scales[0][1]) if scales and scales[0] else None
    if out_mpp is None:
        raise OutputError(f"{path} records no resolution (wsiseg.mpp or multiscales scale)")

    level_mpps: list[tuple[float, float]] = []
    for i, p in enumerate(paths):
        s = scales[i] if i < len(scales) else None
        if s is not None:
            level_mpps.append((s[2], s[1]))
        else:  # no transform recorded: derive from the shape ratio to level 0
            arr: Any = label_group[p]
            level_mpps.append((out_mpp[0] * level0.shape[1] / arr.shape[1],
                               out_mpp[1] * level0.shape[0] / arr.shape[0]))
    chosen = choose_level([m[0] for m in level_mpps], level, mpp)
    labels: Any = label_group[paths[chosen]]
    if len(labels.shape) != 2:
        raise OutputError(f"{path}: labels/classes/{paths[chosen]} is not a (y, x) array: "
                          f"shape {labels.shape}")

    probabilities: Any = None
    image_scales = _level_scales(root_attrs.get("multiscales"), n_levels)
    if chosen < len(image_scales):
        scale_entry = image_scales[chosen]
        image_path = scale_entry[0] if scale_entry is not None else paths[chosen]
        try:
            candidate = root[image_path]
            if len(candidate.shape) == 3 and tuple(candidate.shape[1:]) == tuple(labels.shape) \
                    and candidate.shape[0] == len(classes):
                probabilities = candidate
        except Exception:  # probabilities are optional: export without the mean-probability measurement
            probabilities = None

    slide: dict[str, Any] = meta["slide"] if isinstance(meta.get("slide"), dict) else {}
    slide_mpp = _pair(slide.get("mpp")) or out_mpp
    mpp_x, mpp_y = level_mpps[chosen]
    slide_id = str(slide.get("sha256_head") or Path(str(slide.get("path") or path)).name)
    return LabelSource(
        labels=labels, probabilities=probabilities, classes=classes, level=chosen, n_levels=len(paths),
        mpp_x=mpp_x, mpp_y=mpp_y, downsample_x=mpp_x / slide_mpp[0], downsample_y=mpp_y / slide_mpp[1],
        slide_id=slide_id,
    )
