"""What a user may choose for a segmentation run: :class:`SegmentOptions`, checked once when made.

The same frozen object travels from the command line or a notebook through :func:`segment_slides` (and to
cluster workers: it pickles) to :func:`segment_slide`, which resolves it against the model into a
:class:`~wsiseg.tiling.Tiling` (the model gives the default resolution, tile size and output grid).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsiseg.errors import ConfigError, option
from wsiseg.frames import CoordinateFrame
from wsiseg.infer.blending import BlendWindow
from wsiseg.io.omezarr import NgffVersion
from wsiseg.predictor import Predictor
from wsiseg.qc.settings import QCMode, QCSettings
from wsiseg.slide.tissue import TissueMask
from wsiseg.tiling import DEFAULT_CHUNK_SIZE, Tiling

#: A region to analyse instead of detected tissue: a mask, or a GeoJSON / mask-image file.
Mask = TissueMask | str | Path


class ReadErrorPolicy(str, enum.Enum):
    """What a tile that cannot be decoded does to a run: ``skip`` it (written as "not analysed", named in
    a warning and in the output's metadata) or ``fail`` the slide."""

    SKIP = "skip"
    FAIL = "fail"


@dataclass(frozen=True)
class SegmentOptions:
    """The options of :func:`~wsiseg.infer.segment.segment_slide` (none of the worker counts changes the
    output).

    Resolution and tiles: ``mpp`` (analysis um/px), ``tile_size`` and ``overlap`` (analysis pixels) and
    ``output_mpp`` (um/px of the output's level 0, a whole multiple of ``mpp``) default to the model's
    (``overlap``: ``tile_size // 8``; ``output_mpp``: the model's native output grid, 4x ``mpp`` for
    SAM-Path); ``chunk_size``: the output's level-0 zarr chunk side (output pixels, a power of two).

    Throughput: ``batch_size`` tiles per model call; ``read_workers`` threads reading tiles (default
    ``min(8, cpus)``); ``write_workers`` threads finalising chunks (default ``min(4, max(2, cpus // 4))``).

    What to analyse: ``tissue`` skips tiles without tissue (detected on a thumbnail); ``mask`` (a
    :class:`~wsiseg.slide.TissueMask`, or a GeoJSON / mask image file) replaces tissue detection;
    ``min_tissue_fraction`` (0..1) of a tile must be tissue to keep it. Skipped area is "not analysed".
    ``qc``: quality control (:class:`~wsiseg.qc.QCMode`: ``default`` leaves pen ink and blurred tissue out
    of the analysis, ``report`` only records them, ``off`` detects tissue only) with ``qc_settings``
    (:class:`~wsiseg.qc.QCSettings`, e.g. ``QCSettings.load("qc.yaml")``); a GeoJSON ``mask`` with
    ``Artifact`` features carries reviewed artifacts instead (:mod:`wsiseg.infer.quality`).
    ``geojson_frame``: the frame of GeoJSON coordinates (a ``mask`` file and the ``--geojson`` export):
    QuPath's (level 0 minus the slide's bounds offset) or OpenSlide's level 0. ``objects``: classes whose
    connected regions the ``--geojson`` export also writes as objects with measurements (``<name>.objects
    .geojson`` and the table ``<name>.objects.csv``; counts in summary.csv). ``on_read_error``: a tile
    that cannot be decoded is skipped (written as not analysed, listed in the metadata) or fails the slide.

    Output: ``blend`` window; ``ngff_version``; ``slide_mpp``: level-0 um/px of slides that record none;
    ``overwrite`` a finished output (without it a finished output is skipped); ``preview`` PNG beside it,
    about ``preview_size`` px on its longer side; ``checkpoint_s``: seconds between resume checkpoints (0:
    after every batch).
    """

    mpp: float | None = None
    tile_size: int | None = None
    overlap: int | None = None
    output_mpp: float | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    batch_size: int = 4
    read_workers: int | None = None
    write_workers: int | None = None
    tissue: bool = True
    mask: Mask | None = None
    min_tissue_fraction: float = 0.0
    qc: QCMode = QCMode.DEFAULT
    qc_settings: QCSettings = field(default_factory=QCSettings)
    geojson_frame: CoordinateFrame = CoordinateFrame.QUPATH
    objects: tuple[str, ...] = ()
    on_read_error: ReadErrorPolicy = ReadErrorPolicy.SKIP
    blend: BlendWindow = BlendWindow.COSINE
    ngff_version: NgffVersion = NgffVersion.V04
    slide_mpp: float | None = None
    overwrite: bool = False
    preview: bool = True
    preview_size: int = 1024
    checkpoint_s: float = 1.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "blend", BlendWindow(self.blend))
            object.__setattr__(self, "ngff_version", NgffVersion(self.ngff_version))
            object.__setattr__(self, "geojson_frame", CoordinateFrame(self.geojson_frame))
            object.__setattr__(self, "on_read_error", ReadErrorPolicy(self.on_read_error))
            object.__setattr__(self, "qc", QCMode(self.qc))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        for name in ("batch_size", "read_workers", "write_workers", "preview_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{option(name)} must be a whole number of at least 1, got {value!r}")
        if not 0.0 <= self.min_tissue_fraction <= 1.0:
            raise ConfigError(f"the minimum tissue fraction must be in 0..1, got {self.min_tissue_fraction}")
        if not (math.isfinite(self.checkpoint_s) and self.checkpoint_s >= 0):
            raise ConfigError(f"the checkpoint interval must be >= 0 seconds, got {self.checkpoint_s}")
        if isinstance(self.mask, str):
            object.__setattr__(self, "mask", Path(self.mask))

    def replace(self, **changes: Any) -> SegmentOptions:
        """These options with ``changes`` (option names as keywords); an unknown name is a ConfigError."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown segmentation option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def tiling(self, model: Predictor) -> Tiling:
        """The tiling of a run with ``model``: these options, the model's values where they are None."""
        mpp = self.mpp if self.mpp is not None else model.mpp
        if mpp is None:
            raise ConfigError(f"the model records no resolution; pass {option('mpp')} (microns per pixel to "
                              "analyse at)")
        return Tiling.create(mpp, self.tile_size if self.tile_size is not None else model.tile_size,
                             self.overlap, output_stride=model.output_stride, output_mpp=self.output_mpp,
                             chunk_size=self.chunk_size)

    def workers(self) -> tuple[int, int]:
        """``(read_workers, write_workers)``, the defaults resolved for this machine."""
        cpus = os.cpu_count() or 2
        read = self.read_workers if self.read_workers is not None else min(8, cpus)
        write = self.write_workers if self.write_workers is not None else min(4, max(2, cpus // 4))
        return read, write

    def absolute(self) -> SegmentOptions:
        """The same options with an absolute mask path (what cluster workers get)."""
        return self.replace(mask=self.mask.absolute()) if isinstance(self.mask, Path) else self

    def recorded(self, tiling: Tiling) -> dict[str, Any]:
        """The parameters recorded in the output (and compared when a run resumes)."""
        mask = None if self.mask is None else str(self.mask) if isinstance(self.mask, Path) else "TissueMask"
        return {"mpp": tiling.mpp, "output_mpp": tiling.output_mpp, "tile_size": tiling.tile_size,
                "overlap": tiling.overlap, "chunk_size": tiling.chunk_size, "tissue": self.tissue,
                "blend": self.blend.value, "mask": mask,
                "min_tissue_fraction": float(self.min_tissue_fraction),
                "ngff_version": self.ngff_version.value, "qc": self.qc.value,
                "qc_settings": None if self.qc is QCMode.OFF else self.qc_settings.to_dict(),
                "geojson_frame": self.geojson_frame.value if isinstance(self.mask, (str, Path)) else None}
