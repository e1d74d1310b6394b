"""What a segmentation output says about itself: the ``wsiseg`` root attribute of its OME-Zarr, typed.

One object, :class:`OutputMetadata`, written by a run (:mod:`wsiseg.infer.segment`, through
:meth:`wsiseg.io.omezarr.SegmentationWriter.write_metadata`) and read by everything that opens an output
(:func:`wsiseg.io.omezarr.open_segmentation`, :func:`wsiseg.io.omezarr.read_output_metadata`): the
export, the composition and cohort table, the preview, resume decisions.

Versions (``metadata_version``): 1 = outputs written before the key existed (wsiseg <= 0.1.0, it is
absent); 2 = this layout, the same keys plus ``metadata_version``. Every key but ``classes`` and
``slide.mpp`` may be absent in what is read (older or hand-made outputs): it then takes its default.
A ``metadata_version`` newer than this wsiseg knows raises OutputError (upgrade wsiseg).

Layout (JSON)::

    {"metadata_version": 2, "version": "<wsiseg>", "run_id": "<hex>",
     "slide": {"name", "path", "width0", "height0", "mpp": [x, y], "vendor", "bounds", "sha256_head"},
     "model": {<the model's provenance>}, "params": {<the run's options>},
     "classes": {<ClassList.to_dict()>}, "mpp": <output level-0 um/px>, "analysis_mpp": <tiles' um/px>,
     "started": "<ISO>", "finished": "<ISO>" | null,
     "tiles": {"analysed": n, "total": n}, "not_analysed": "<what label 0 means>",
     # once finished:
     "timings": {<stage seconds>}, "resumed": bool, "composition": {<class areas>} ,
     "qc": {<the run's QC record>} | null, "unreadable_tiles": {"count": n, "tiles": [...]}}

Torch-free and zarr-free.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsiseg.classes import ClassList
from wsiseg.errors import OutputError
from wsiseg.frames import SlideBounds

#: the layout this wsiseg writes
METADATA_VERSION = 2
#: the root attribute that holds it
ATTRIBUTE = "wsiseg"
NOT_ANALYSED = "label 0 and probability 0 in every channel (outside tissue / ROI)"


@dataclass(frozen=True)
class SlideRecord:
    """The slide an output was made from: file ``name`` and absolute ``path``, level-0 size in pixels
    (``None`` when not recorded), level-0 ``mpp`` (x, y) in um/px, OpenSlide's ``vendor``, its ``bounds``
    (level-0 pixels) and the sha256 of its first MiB (``sha256_head``)."""

    mpp: tuple[float, float]
    name: str = ""
    path: str = ""
    width0: int | None = None
    height0: int | None = None
    vendor: str = ""
    bounds: SlideBounds | None = None
    sha256_head: str | None = None

    @property
    def identity(self) -> str:
        """What names the slide across copies and renames: ``sha256_head``, else the file name."""
        return self.sha256_head or self.name or Path(self.path).name

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "width0": self.width0, "height0": self.height0,
                "mpp": list(self.mpp), "vendor": self.vendor,
                "bounds": None if self.bounds is None else self.bounds.as_dict(),
                "sha256_head": self.sha256_head}

    @classmethod
    def from_json(cls, data: Any) -> SlideRecord:
        mpp_x, mpp_y = (float(v) for v in data["mpp"])
        path = str(data.get("path") or "")
        head = data.get("sha256_head")
        return cls((mpp_x, mpp_y), str(data.get("name") or Path(path).name), path, _size(data.get("width0")),
                   _size(data.get("height0")), str(data.get("vendor") or ""),
                   SlideBounds.from_attrs(data.get("bounds")), None if head is None else str(head))


@dataclass(frozen=True)
class OutputMetadata:
    """The ``wsiseg`` attribute of a segmentation output (the module docstring gives the JSON layout).

    ``mpp``: um/px of the output grid (the pyramid's level 0); ``analysis_mpp``: um/px of the tiles the
    model saw. ``model``: the model's provenance and ``params``: the run's recorded options, as written
    (their keys belong to the model and to :class:`wsiseg.infer.options.SegmentOptions`). The fields from
    ``timings`` on are set when the run finishes (:meth:`finish`); ``composition`` and ``qc`` are the
    records of :mod:`wsiseg.export.composition` and :mod:`wsiseg.infer.quality`.
    """

    slide: SlideRecord
    classes: ClassList
    mpp: float = 0.0
    analysis_mpp: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    run_id: str = ""
    started: str = ""
    finished: str | None = None
    tiles_analysed: int = 0
    tiles_total: int = 0
    timings: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    composition: dict[str, Any] | None = None
    qc: dict[str, Any] | None = None
    unreadable_tiles: tuple[dict[str, Any], ...] = ()
    metadata_version: int = METADATA_VERSION

    # -- what readers ask ----------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The model's checkpoint file name, else its recorded name (e.g. ``pattern``), else ``""``."""
        checkpoint = self.model.get("checkpoint")
        file = checkpoint.get("file") if isinstance(checkpoint, dict) else None
        return str(file or self.model.get("name") or self.model.get("model") or "")

    @property
    def run_key(self) -> str:
        """What tells this run apart from another of the same slide: ``run <id>``, else ``started <time>``."""
        return f"run {self.run_id}" if self.run_id else f"started {self.started}" if self.started else ""

    @property
    def qc_mode(self) -> str:
        """The run's QC mode (``default``, ``report``, ``off``), ``""`` when the output records none."""
        return str(self.qc.get("mode", "")) if self.qc is not None else ""

    @property
    def qc_excluded(self) -> bool:
        """Whether the run left artifacts out of the analysis (QC mode ``default``)."""
        return bool(self.qc.get("excluded", True)) if self.qc is not None else False

    def artifact_areas_um2(self) -> dict[str, float] | None:
        """Area (um^2) per artifact kind found by QC (``pen``, ``blur``, ...), ``None`` without QC."""
        if self.qc is None:
            return None
        labels = self.qc.get("areas", {}).get("labels", {})
        return {name: float(v["area_um2"]) for name, v in labels.items()
                if name not in ("background", "tissue") and isinstance(v, dict)}

    # -- writing ---------------------------------------------------------------------------------------
    def finish(self, finished: str, *, timings: dict[str, Any], resumed: bool, composition: dict[str, Any],
               qc: dict[str, Any] | None, unreadable_tiles: list[dict[str, Any]]) -> OutputMetadata:
        """This metadata as a finished run records it."""
        return dataclasses.replace(self, finished=finished, timings=timings, resumed=resumed,
                                   composition=composition, qc=qc, unreadable_tiles=tuple(unreadable_tiles))

    def to_json(self) -> dict[str, Any]:
        """The JSON attribute (key order as written since version 1, ``metadata_version`` first)."""
        data: dict[str, Any] = {
            "metadata_version": self.metadata_version, "version": self.version, "run_id": self.run_id,
            "slide": self.slide.to_json(), "model": self.model, "params": self.params,
            "classes": self.classes.to_dict(), "mpp": self.mpp, "analysis_mpp": self.analysis_mpp,
            "started": self.started, "finished": self.finished,
            "tiles": {"analysed": self.tiles_analysed, "total": self.tiles_total},
            "not_analysed": NOT_ANALYSED,
        }
        if self.finished is not None:
            data.update({"timings": self.timings, "resumed": self.resumed, "composition": self.composition,
                         "qc": self.qc, "unreadable_tiles": {"count": len(self.unreadable_tiles),
                                                             "tiles": list(self.unreadable_tiles)}})
        return data

    # -- reading ---------------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> OutputMetadata:
        """Parse the attribute of the output at ``where`` (named in errors). OutputError when it is not a
        mapping, lacks ``classes`` or ``slide.mpp``, holds values of the wrong kind, or comes from a newer
        wsiseg."""
        if not isinstance(data, dict):
            raise OutputError(f"{where}: malformed wsiseg segmentation metadata (not a mapping)")
        version = data.get("metadata_version", 1)
        if not isinstance(version, int) or version > METADATA_VERSION:
            raise OutputError(f"{where} was written by a newer wsiseg (metadata version {version!r}; this "
                              f"one reads up to {METADATA_VERSION}): upgrade wsiseg")
        try:
            return cls._parse(data, version)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise OutputError(f"{where}: malformed wsiseg segmentation metadata ({type(exc).__name__}: "
                              f"{exc})") from exc

    @classmethod
    def _parse(cls, data: dict[str, Any], version: int) -> OutputMetadata:
        tiles = data.get("tiles") or {}
        unreadable = data.get("unreadable_tiles") or {}
        return cls(
            slide=SlideRecord.from_json(data["slide"]), classes=ClassList.from_dict(data["classes"]),
            mpp=float(data.get("mpp") or 0.0), analysis_mpp=float(data.get("analysis_mpp") or 0.0),
            model=_mapping(data.get("model")), params=_mapping(data.get("params")),
            version=str(data.get("version") or ""), run_id=str(data.get("run_id") or ""),
            started=str(data.get("started") or ""),
            finished=None if not data.get("finished") else str(data["finished"]),
            tiles_analysed=int(tiles.get("analysed", 0)), tiles_total=int(tiles.get("total", 0)),
            timings=_mapping(data.get("timings")), resumed=bool(data.get("resumed", False)),
            composition=_mapping(data["composition"]) if isinstance(data.get("composition"), dict) else None,
            qc=_mapping(data["qc"]) if isinstance(data.get("qc"), dict) else None,
            unreadable_tiles=tuple(_mapping(t) for t in unreadable.get("tiles", [])),
            metadata_version=version,
        )


def _mapping(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return dict(value)


def _size(value: Any) -> int | None:
    """A recorded level-0 size, or None when absent or not a positive whole number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value) if value > 0 else None
