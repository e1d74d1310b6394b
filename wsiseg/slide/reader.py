"""Open a slide and read regions at a target resolution in microns per pixel.

Frames: ``x0, y0`` are level-0 pixels; ``width_t, height_t`` are pixels at the target resolution
``mpp`` (um/px). One target pixel spans ``mpp / mpp_x`` level-0 pixels horizontally.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from wsiseg.errors import MissingMppError, SlideError, option
from wsiseg.frames import SlideBounds
from wsiseg.slide._backends import (
    PLAIN_IMAGE_SUFFIXES,
    _Backend,
    _OpenSlideBackend,
    open_openslide,
    open_plain_image,
    tiff_pyramid_instead,
)

#: A level is "not coarser than" the target when its mpp is at most target * (1 + this).
_LEVEL_TOLERANCE = 1e-3
#: Reads whose scale factor is within this of 1 (and pixel aligned) skip the resize.
_UNIT_SCALE_TOLERANCE = 1e-6
#: Thumbnails are assembled from reads of at most this many level pixels per side ...
_THUMBNAIL_BLOCK_L = 4096
#: ... and a block that cannot be decoded from pieces of this many (only failing pieces stay white).
_THUMBNAIL_PIECE_L = 256


def _copy_into(out: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """``pixels`` copied into ``out`` (same shape); returns ``out``."""
    out[...] = pixels
    return out


class Slide:
    """A whole-slide image (or a plain image as a one-level slide) with a known level-0 resolution.

    Use :func:`open_slide` to create one. A context manager; :meth:`read_region` is thread-safe.
    """

    def __init__(self, path: Path, backend: _Backend, mpp: tuple[float, float]) -> None:
        self.path = path
        self._backend = backend
        self._mpp = mpp

    # -- metadata -------------------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        """``(w0, h0)``: level-0 size in pixels."""
        return self._backend.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self._backend.level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each pyramid level in that level's pixels."""
        return self._backend.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Level-0 pixels per level pixel, per level (1.0 first)."""
        return self._backend.level_downsamples

    @property
    def mpp(self) -> tuple[float, float]:
        """``(mpp_x, mpp_y)``: microns per level-0 pixel (recorded, or the value given to ``open_slide``)."""
        return self._mpp

    @property
    def objective_power(self) -> float | None:
        return self._backend.objective_power

    @property
    def vendor(self) -> str:
        """OpenSlide's vendor (``aperio``, ``generic-tiff``, ...); ``image``/``tiff`` for plain images."""
        return self._backend.vendor

    @property
    def properties(self) -> dict[str, str]:
        """Raw metadata key/values (OpenSlide properties; empty for plain images)."""
        return dict(self._backend.properties)

    @property
    def bounds(self) -> SlideBounds | None:
        """The rectangle of level 0 that holds image data, when the format records one (OpenSlide's
        ``openslide.bounds-x/-y/-width/-height``: MIRAX, some Hamamatsu and 3DHistech files), else None.
        QuPath shows such slides cropped to it, so its pixel coordinates are level 0 minus ``(x, y)``."""
        p = self._backend.properties
        try:
            values = [int(p[f"openslide.bounds-{k}"]) for k in ("x", "y", "width", "height")]
        except (KeyError, ValueError):
            return None
        if values[2] <= 0 or values[3] <= 0:
            return None
        return SlideBounds(*values)

    @property
    def associated_images(self) -> list[str]:
        """Names of associated images (``label``, ``macro``, ``thumbnail``, ...)."""
        return self._backend.associated_images

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image as RGB uint8 ``(h, w, 3)`` (composited on white)."""
        return self._backend.associated_image(name)

    # -- geometry -------------------------------------------------------------------------------------
    def level_mpp(self, level: int) -> float:
        """Microns per pixel (x) of ``level``."""
        return self._mpp[0] * self._backend.level_downsamples[level]

    def best_level(self, mpp: float) -> int:
        """The coarsest level whose resolution is not coarser than ``mpp`` (level 0 if none is)."""
        downsamples = self._backend.level_downsamples
        best = 0
        for level, ds in enumerate(downsamples):
            if self._mpp[0] * ds <= mpp * (1 + _LEVEL_TOLERANCE) and ds >= downsamples[best]:
                best = level
        return best

    def size_at(self, mpp: float) -> tuple[int, int]:
        """``(width_t, height_t)``: the slide's size at ``mpp`` um/px, rounded up."""
        _check_mpp(mpp)
        w0, h0 = self.dimensions
        mpp_x, mpp_y = self.mpp
        return (max(1, math.ceil(w0 * mpp_x / mpp - 1e-6)),
                max(1, math.ceil(h0 * mpp_y / mpp - 1e-6)))

    # -- pixels ---------------------------------------------------------------------------------------
    def read_region(self, x0: int, y0: int, width_t: int, height_t: int, mpp: float,
                    out: np.ndarray | None = None) -> np.ndarray:
        """Read RGB uint8 ``(height_t, width_t, 3)`` at ``mpp`` um/px whose top-left is level-0 ``(x0, y0)``.

        The area is ``width_t * mpp / mpp_x`` level-0 pixels wide (and likewise high); it is read from
        the coarsest level not coarser than ``mpp``, resized with antialiasing (box filter when shrinking,
        bicubic when enlarging) only when the remaining factor is not 1, and composited on white. Parts
        outside the slide are white. Safe to call from several threads at once.

        ``out`` (uint8 ``(height_t, width_t, 3)``, e.g. one tile of a batch array) receives the pixels and
        is returned; at a level's own resolution they are decoded straight into it, with no extra copy.
        """
        if out is not None and (out.shape != (height_t, width_t, 3) or out.dtype != np.uint8):
            raise ValueError(f"out must be uint8 ({height_t}, {width_t}, 3), got {out.dtype} {out.shape}")
        return self._read(float(x0), float(y0), int(width_t), int(height_t), mpp, out)

    def _read(self, x0: float, y0: float, width_t: int, height_t: int, mpp: float,
              out: np.ndarray | None = None) -> np.ndarray:
        _check_mpp(mpp)
        if width_t <= 0 or height_t <= 0:
            raise ValueError(f"region size must be positive, got {width_t}x{height_t}")
        level = self.best_level(mpp)
        ds = self._backend.level_downsamples[level]
        # Target pixel size in level pixels, and the region's origin in level pixels.
        fx, fy = mpp / (self._mpp[0] * ds), mpp / (self._mpp[1] * ds)
        lx, ly = x0 / ds, y0 / ds
        lxi, lyi = math.floor(lx + 1e-9), math.floor(ly + 1e-9)
        ox, oy = lx - lxi, ly - lyi
        if (abs(fx - 1) < _UNIT_SCALE_TOLERANCE and abs(fy - 1) < _UNIT_SCALE_TOLERANCE
                and ox < 1e-6 and oy < 1e-6):  # the level's own pixels: no resize at all
            if out is not None and out.flags.c_contiguous:
                self._backend.read_level_into(out, round(lxi * ds), round(lyi * ds), level)
                return out
            pixels = self._backend.read_level(round(lxi * ds), round(lyi * ds), level, width_t, height_t)
            return pixels if out is None else _copy_into(out, pixels)
        wl, hl = width_t * fx, height_t * fy
        shrinking = fx >= 1 and fy >= 1
        ix, iy = round(fx), round(fy)
        integer = abs(fx - ix) < _UNIT_SCALE_TOLERANCE and abs(fy - iy) < _UNIT_SCALE_TOLERANCE
        if integer and ix >= 1 and iy >= 1 and ox < 1e-6 and oy < 1e-6:
            # Whole-pixel aligned integer factor: Pillow's reduce() is the exact box mean and ~3x faster.
            pixels = self._backend.read_level(round(lxi * ds), round(lyi * ds), level, width_t * ix,
                                              height_t * iy)
            image = Image.fromarray(pixels).reduce((ix, iy))
        else:
            # The box filter needs exactly the covered level pixels; bicubic enlargement needs 2 more each
            # side.
            m = 0 if shrinking else 2
            read_w, read_h = math.ceil(ox + wl - 1e-9) + 2 * m, math.ceil(oy + hl - 1e-9) + 2 * m
            pixels = self._backend.read_level(round((lxi - m) * ds), round((lyi - m) * ds), level, read_w,
                                              read_h)
            resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
            box = (ox + m, oy + m, ox + m + wl, oy + m + hl)
            image = Image.fromarray(pixels).resize((width_t, height_t), resample, box=box)
        return np.asarray(image).copy() if out is None else _copy_into(out, np.asarray(image))

    def thumbnail(self, mpp: float) -> np.ndarray:
        """The whole slide at ``mpp`` um/px as RGB uint8 ``(height_t, width_t, 3)`` (see :meth:`size_at`).

        Read in blocks of at most ~4096x4096 level pixels, so memory is bounded by the output size. A block
        that cannot be decoded (a damaged slide) is read again in pieces of ~256 level pixels, and only the
        pieces that fail are left white, so one damaged tile costs a thumbnail (and tissue detection) only
        its own area.
        """
        width_t, height_t = self.size_at(mpp)
        level = self.best_level(mpp)
        per_t = mpp / self.level_mpp(level)  # level pixels per target pixel
        block_t = max(1, int(_THUMBNAIL_BLOCK_L / max(per_t, 1.0)))
        piece_t = max(1, int(_THUMBNAIL_PIECE_L / max(per_t, 1.0)))
        out = np.empty((height_t, width_t, 3), np.uint8)
        for y_t in range(0, height_t, block_t):
            for x_t in range(0, width_t, block_t):
                bw, bh = min(block_t, width_t - x_t), min(block_t, height_t - y_t)
                try:
                    out[y_t:y_t + bh, x_t:x_t + bw] = self._read_at(x_t, y_t, bw, bh, mpp)
                except SlideError:
                    for py in range(y_t, y_t + bh, piece_t):
                        for px in range(x_t, x_t + bw, piece_t):
                            pw, ph = min(piece_t, x_t + bw - px), min(piece_t, y_t + bh - py)
                            try:
                                out[py:py + ph, px:px + pw] = self._read_at(px, py, pw, ph, mpp)
                            except SlideError:
                                out[py:py + ph, px:px + pw] = 255
        return out

    def _read_at(self, x_t: int, y_t: int, width_t: int, height_t: int, mpp: float) -> np.ndarray:
        """The rectangle at ``(x_t, y_t)`` in pixels of ``mpp`` um/px."""
        return self._read(x_t * mpp / self._mpp[0], y_t * mpp / self._mpp[1], width_t, height_t, mpp)

    # -- lifetime -------------------------------------------------------------------------------------
    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        w0, h0 = self.dimensions
        return (f"Slide({str(self.path)!r}, {w0}x{h0}, levels={self.level_count}, "
                f"mpp=({self._mpp[0]:.4g}, {self._mpp[1]:.4g}), vendor={self.vendor!r})")

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary of the metadata (what ``wsiseg info`` prints)."""
        return {
            "path": str(self.path),
            "vendor": self.vendor,
            "width0": self.dimensions[0],
            "height0": self.dimensions[1],
            "mpp_x": self._mpp[0],
            "mpp_y": self._mpp[1],
            "objective_power": self.objective_power,
            "levels": [
                {"level": i, "width": w, "height": h, "downsample": ds, "mpp": self.level_mpp(i)}
                for i, ((w, h), ds) in enumerate(
                    zip(self.level_dimensions, self.level_downsamples, strict=True))
            ],
            "associated_images": self.associated_images,
            "bounds": None if self.bounds is None else self.bounds.as_dict(),
        }


def _check_mpp(mpp: float) -> None:
    if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number of microns per pixel, got {mpp!r}")


def _unreadable(path: Path) -> str:
    """Why OpenSlide rejected ``path``, as far as its first bytes tell."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if not head:
        return f"cannot read {path}: the file is empty"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return (f"cannot read {path}: it is a TIFF file that OpenSlide cannot open; it is probably truncated "
                "or corrupt (or not a tiled pyramid)")
    return (f"cannot read {path}: not a slide format OpenSlide supports (Aperio SVS, generic tiled TIFF, "
            "Hamamatsu, MIRAX, DICOM, ...) nor a plain PNG/JPEG/TIFF image")


def open_slide(path: str | Path, mpp: float | None = None) -> Slide:
    """Open a whole-slide image (any OpenSlide format) or a plain PNG/JPEG/TIFF as a one-level slide.

    ``mpp`` (um per level-0 pixel) overrides the recorded resolution; it is required when the file
    records none. Raises :class:`SlideError` for missing/unreadable/unsupported files and
    :class:`MissingMppError` when no resolution is known.
    """
    path = Path(path)
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise SlideError(f"{option('slide_mpp')} must be a positive number of microns per pixel, got {mpp}")
    if not path.exists():
        raise SlideError(f"slide not found: {path}")
    if path.is_dir() and path.suffix.lower() != ".mrxs":
        raise SlideError(f"{path} is a directory, not a slide file")
    backend: _Backend | None = open_openslide(path)
    if isinstance(backend, _OpenSlideBackend):
        backend = tiff_pyramid_instead(path, backend)
    if backend is None:
        if path.suffix.lower() not in PLAIN_IMAGE_SUFFIXES:
            raise SlideError(_unreadable(path))
        backend = open_plain_image(path)
    recorded = backend.recorded_mpp
    if mpp is not None:
        resolution = (float(mpp), float(mpp))
    elif recorded is not None:
        resolution = recorded
    else:
        backend.close()
        raise MissingMppError(f"{path} records no microns per pixel; give its level-0 resolution as "
                              f"{option('slide_mpp')} (e.g. 0.5 for a 20x scan)")
    return Slide(path, backend, resolution)
