"""One level of a segmentation as :mod:`wsiseg.export` needs it: label array, probabilities, geometry.

The OME-Zarr layout belongs to :mod:`wsiseg.io.omezarr`; this module only adapts its reader, imported
when a segmentation is opened (so ``import wsiseg.export`` loads no zarr). Anything else that can fill a
:class:`LabelSource` (e.g. in-memory arrays) can be exported too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsiseg.classes import ClassList
from wsiseg.errors import ConfigError
from wsiseg.frames import SlideBounds
from wsiseg.io.arrays import LevelArray

if TYPE_CHECKING:
    from wsiseg.io.omezarr import LabelValue, Segmentation


@dataclass(frozen=True)
class LabelSource:
    """One pyramid level of a segmentation.

    ``labels`` is a ``(y, x)`` uint8 array at this level (0 = not analysed, ``i + 1`` = class ``i``);
    ``probabilities`` the ``(c, y, x)`` uint8 array (0..255 per class) of the same level, or ``None``.
    ``mpp_x``/``mpp_y`` are um/px of this level; ``downsample_x``/``downsample_y`` are slide level-0 pixels
    per pixel of this level (multiply level coordinates by them to get level-0 coordinates).
    ``slide_id`` identifies the slide and ``run_key`` the segmentation run (its ``run_id``; for outputs
    written before run ids, its start time) for feature ids that are stable across re-exports of one
    output and differ between two segmentations of the same slide (:attr:`identity`).
    ``width0``/``height0``: the slide's OpenSlide level-0 size, ``bounds``: its ``openslide.bounds-*``
    rectangle; exported geometries are clipped to the bounds, else to the slide (None: unknown, the
    label grid is used as it is). ``label_image``: which label image of the output (``classes``, or e.g.
    ``qc``); ``qupath_names``: the QuPath classification of each class where it is not the class name
    (QC artifacts: ``Artifact: pen``, a derived class QuPath groups under ``Artifact``).
    """

    labels: LevelArray
    probabilities: LevelArray | None
    classes: ClassList
    level: int
    n_levels: int
    mpp_x: float
    mpp_y: float
    downsample_x: float
    downsample_y: float
    slide_id: str
    run_key: str = ""
    width0: int | None = None
    height0: int | None = None
    bounds: SlideBounds | None = None
    label_image: str = "classes"
    qupath_names: tuple[str, ...] | None = None

    @property
    def identity(self) -> str:
        """What feature ids are derived from: the slide and the run (and the label image, other than the
        classes)."""
        base = f"{self.slide_id}|{self.run_key}" if self.run_key else self.slide_id
        return base if self.label_image == "classes" else f"{base}|{self.label_image}"

    @property
    def height(self) -> int:
        return int(self.labels.shape[0])

    @property
    def width(self) -> int:
        return int(self.labels.shape[1])


def choose_level(n_levels: int, level: int | None, mpp: float | None, segmentation: Segmentation) -> int:
    """Pick a pyramid level: ``level`` as given, or for ``mpp`` (um/px) the finest level at least that coarse
    (:meth:`wsiseg.io.omezarr.Segmentation.level_for_mpp`); with neither, level 0 (the exact labels).

    Raises :class:`ConfigError` for both, an out-of-range level or a non-positive mpp.
    """
    if level is not None and mpp is not None:
        raise ConfigError("give either a level or an mpp, not both")
    if level is not None:
        if not 0 <= level < n_levels:
            raise ConfigError(f"level {level} does not exist; the segmentation has levels 0..{n_levels - 1}")
        return level
    if mpp is not None:
        if not (mpp > 0 and math.isfinite(mpp)):
            raise ConfigError(f"mpp must be a positive number, got {mpp}")
        return segmentation.level_for_mpp(mpp)
    return 0


def open_label_source(zarr_path: str | Path, *, level: int | None = None, mpp: float | None = None,
                      labels: str = "classes") -> LabelSource:
    """Open a label pyramid of a wsiseg segmentation at one level (see :func:`choose_level`): the class
    labels, or another label image (``labels="qc"``: the QC labels, whose values 1.. become classes).

    Reads through :func:`wsiseg.io.omezarr.open_segmentation`, which raises :class:`OutputError` when
    the path is not a wsiseg segmentation (or has no such label image).
    """
    from wsiseg.io.omezarr import open_segmentation

    seg = open_segmentation(zarr_path)
    chosen = choose_level(seg.n_levels, level, mpp, seg)
    classes, qupath_names = seg.classes, None
    if labels == "classes":
        array = seg.labels[chosen]
        probabilities: Any = seg.probs[chosen] if chosen < len(seg.probs) else None
        expected = (len(seg.classes), *array.shape)
        if probabilities is not None and tuple(probabilities.shape) != expected:
            probabilities = None  # not this level's class probabilities: no mean-probability measurement
    else:
        pyramid, values = seg.label_image(labels)
        array, probabilities = pyramid[chosen], None
        classes, qupath_names = label_image_classes(labels, values)
    slide = seg.metadata.slide
    downsample_x, downsample_y = seg.downsample0(chosen)
    return LabelSource(
        labels=array, probabilities=probabilities, classes=classes, level=chosen, n_levels=seg.n_levels,
        mpp_x=seg.mpp[chosen], mpp_y=seg.mpp[chosen], downsample_x=downsample_x, downsample_y=downsample_y,
        slide_id=slide.identity or seg.path.name, run_key=seg.metadata.run_key, width0=slide.width0,
        height0=slide.height0, bounds=slide.bounds,
        label_image=labels, qupath_names=qupath_names,
    )


def label_image_classes(name: str, values: list[LabelValue]) -> tuple[ClassList, tuple[str, ...]]:
    """The classes of a label image (its values 1..n; 0 is nothing) and their QuPath classifications
    (``qc``: :attr:`wsiseg.qc.QCLabel.qupath_class`; others: the value names)."""
    named = sorted((v for v in values if v.value > 0), key=lambda v: v.value)
    if [v.value for v in named] != list(range(1, len(named) + 1)):
        raise ConfigError(f"label image {name!r} has values {[v.value for v in named]}, not 1..n")
    classes = ClassList.from_names([v.name for v in named], [v.rgba[:3] for v in named])
    if name == "qc":
        from wsiseg.qc.labels import QCLabel

        return classes, tuple(QCLabel(v.value).qupath_class for v in named)
    return classes, tuple(v.name for v in named)
