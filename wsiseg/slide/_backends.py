"""Pixel sources behind :class:`wsiseg.slide.Slide`: OpenSlide (pyramidal formats) and plain images.

A backend knows levels and reads RGB uint8 rectangles *at one level*, composited on white, with white
outside the image. Resolution arithmetic (which level, resize) lives in :mod:`wsiseg.slide.reader`.

Thread safety: OpenSlide documents ``openslide_t`` as safe to use from several threads without locking,
and the ctypes call releases the GIL, so :class:`_OpenSlideBackend` shares one handle and takes no lock
for reading. OpenSlide puts a handle into a permanent error state at its first failed read; the backend
then swaps in a fresh shared handle (under a lock) and reads the region again on a handle of its own, so
one damaged tile costs only that tile, however many threads read at the time.
``benchmarks/bench_slide.py`` compares the three designs (shared handle without lock, shared handle behind
a lock, one handle per thread) for 1024x1024 reads with 2 threads. On the 2-core development machine
(heavily loaded by other jobs) they were equal within noise (best of 5: 12.4, 13.6 and 11.7 tiles/s;
one thread 15.5), so we keep the simplest: a lock can only serialise JPEG decoding on idle cores, and
per-thread handles repeat the open and split OpenSlide's tile cache. The plain-image backend slices
decoded pixels held in memory (PNG/JPEG/BMP), which is thread-safe as well; TIFFs that OpenSlide does not
open are read region by region through tifffile + zarr behind a lock.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import openslide
import tifffile
from PIL import Image

from wsiseg.errors import SlideError
from wsiseg.slide import _openslide_raw

T = TypeVar("T")

#: Microns per pixel outside this range are treated as "not recorded" (e.g. a 72 dpi default).
_PLAUSIBLE_MPP = (0.01, 20.0)

#: TIFF ResolutionUnit values -> microns per unit.
_UM_PER_UNIT = {"centimeter": 1.0e4, "inch": 25400.0, "3": 1.0e4, "2": 25400.0}

PLAIN_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})


def _plausible(mpp: float | None) -> float | None:
    if mpp is None or not math.isfinite(mpp) or not _PLAUSIBLE_MPP[0] <= mpp <= _PLAUSIBLE_MPP[1]:
        return None
    return mpp


def mpp_from_resolution(resolution: float | None, unit: str | None) -> float | None:
    """Microns per pixel from a TIFF/PNG resolution (pixels per ``unit``), or None when implausible."""
    if resolution is None or unit is None or resolution <= 0:
        return None
    um = _UM_PER_UNIT.get(str(unit).lower())
    return _plausible(um / resolution) if um else None


class _Backend(ABC):
    """Levels plus a level-space RGB reader."""

    vendor: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    properties: dict[str, str]
    objective_power: float | None
    recorded_mpp: tuple[float, float] | None

    @abstractmethod
    def read_level(self, x0: int, y0: int, level: int, width_l: int, height_l: int) -> np.ndarray:
        """RGB uint8 ``(height_l, width_l, 3)`` at ``level`` whose top-left is level-0 pixel ``(x0, y0)``;
        white outside the image."""

    def read_level_into(self, out: np.ndarray, x0: int, y0: int, level: int) -> None:
        """:meth:`read_level` of ``out``'s size, written into ``out`` (RGB uint8 ``(h, w, 3)``)."""
        out[...] = self.read_level(x0, y0, level, out.shape[1], out.shape[0])

    @property
    @abstractmethod
    def associated_images(self) -> list[str]: ...

    @abstractmethod
    def associated_image(self, name: str) -> np.ndarray: ...

    def close(self) -> None:
        return None


_BGR_TO_RGB = np.array([2, 1, 0])


def premultiplied_bgra_on_white(buf: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """OpenSlide's premultiplied ARGB words (bytes B, G, R, A on little-endian) -> RGB on white.

    Over white, premultiplied colour ``C`` with alpha ``A`` gives ``C + 255 - A`` exactly (C <= A), so
    opaque pixels pass through and fully transparent ones (outside the slide) become white. ``out`` (RGB
    uint8 of ``buf``'s height and width, C-contiguous) receives the result when given.
    """
    h, w = buf.shape[:2]
    if out is None:
        out = np.empty((h, w, 3), np.uint8)
    flat, rgb_flat = buf.reshape(-1, 4), out.reshape(-1, 3)
    for c in range(3):  # plane by plane: as fast as a fancy-index gather, ~4x a reversed-view copy
        rgb_flat[:, c] = flat[:, _BGR_TO_RGB[c]]
    rgb = out
    alpha = buf[..., 3]
    if alpha.min() < 255:
        rgb += (255 - alpha)[..., None]
    return rgb


class _OpenSlideBackend(_Backend):
    """Every format OpenSlide reads. One shared handle, no lock (see the module docstring)."""

    def __init__(self, path: Path, handle: openslide.OpenSlide) -> None:
        self._path = path
        self._slide = handle
        self._reopen_lock = threading.Lock()
        self.vendor = handle.properties.get(openslide.PROPERTY_NAME_VENDOR) or "unknown"
        self.level_dimensions = tuple((int(w), int(h)) for w, h in handle.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in handle.level_downsamples)
        self.properties = dict(handle.properties)
        power = self.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        self.objective_power = _float_or_none(power)
        self.recorded_mpp = self._mpp()
        self._raw = _openslide_raw.available(handle)  # the fast path (see wsiseg.slide._openslide_raw)

    def _mpp(self) -> tuple[float, float] | None:
        p = self.properties
        mx = _plausible(_float_or_none(p.get(openslide.PROPERTY_NAME_MPP_X)))
        my = _plausible(_float_or_none(p.get(openslide.PROPERTY_NAME_MPP_Y)))
        if mx is None or my is None:  # generic TIFFs: OpenSlide leaves the resolution tags to us
            unit = p.get("tiff.ResolutionUnit")
            mx = mpp_from_resolution(_float_or_none(p.get("tiff.XResolution")), unit)
            my = mpp_from_resolution(_float_or_none(p.get("tiff.YResolution")), unit)
        if mx is None or my is None:
            return None
        return (mx, my)

    def read_level_into(self, out: np.ndarray, x0: int, y0: int, level: int) -> None:
        height_l, width_l = out.shape[:2]
        if self._raw and width_l > 0 and height_l > 0 and out.flags.c_contiguous:
            self._read_raw(x0, y0, level, width_l, height_l, out)
        else:
            super().read_level_into(out, x0, y0, level)

    def _recover(self, failed: openslide.OpenSlide) -> None:
        """OpenSlide puts a handle into a permanent error state at the first failed read (e.g. one corrupt
        JPEG tile): replace it by a fresh one so that the other regions stay readable (once per error,
        however many threads saw it)."""
        with self._reopen_lock:
            if self._slide is failed:
                self._slide = openslide.OpenSlide(str(self._path))

    def _reading(self, read: Callable[[openslide.OpenSlide], T], x0: int, y0: int, level: int) -> T:
        """``read(handle)``. A region that fails is read again on a handle of its own (the shared one may
        have been put into its error state by another thread's damaged tile); one that fails there too is
        damaged: SlideError naming the region (the slide stays readable elsewhere)."""
        handle = self._slide
        try:
            return read(handle)
        except openslide.OpenSlideError:
            self._recover(handle)
        private = openslide.OpenSlide(str(self._path))
        try:
            return read(private)
        except openslide.OpenSlideError as exc:
            raise SlideError(f"cannot read {self._path} at level {level}, ({x0}, {y0}): the slide is "
                             f"damaged there ({exc})") from exc
        finally:
            private.close()

    def _read_raw(self, x0: int, y0: int, level: int, width_l: int, height_l: int,
                  out: np.ndarray | None = None) -> np.ndarray:
        """The ctypes fast path: premultiplied BGRA straight from the C library, then RGB on white."""
        buf = np.empty((height_l, width_l, 4), np.uint8)

        self._reading(lambda handle: _openslide_raw.read_argb(handle, buf, x0, y0, level), x0, y0, level)
        return premultiplied_bgra_on_white(buf, out)

    def read_level(self, x0: int, y0: int, level: int, width_l: int, height_l: int) -> np.ndarray:
        if width_l <= 0 or height_l <= 0:
            return np.full((max(height_l, 0), max(width_l, 0), 3), 255, np.uint8)
        if self._raw:
            return self._read_raw(x0, y0, level, width_l, height_l)
        region = self._reading(lambda h: h.read_region((x0, y0), level, (width_l, height_l)), x0, y0, level)
        white = Image.new("RGB", region.size, (255, 255, 255))
        white.paste(region, mask=region.getchannel("A"))
        return np.asarray(white).copy()

    @property
    def associated_images(self) -> list[str]:
        return sorted(self._slide.associated_images)

    def associated_image(self, name: str) -> np.ndarray:
        if name not in self._slide.associated_images:
            raise SlideError(f"{self._path} has no associated image {name!r}; it has: "
                             f"{', '.join(self.associated_images) or 'none'}")
        try:
            image = self._slide.associated_images[name]
        except openslide.OpenSlideError as exc:
            raise SlideError(f"cannot read associated image {name!r} of {self._path}: {exc}") from exc
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=image.getchannel("A"))
        return np.asarray(white).copy()

    def close(self) -> None:
        self._slide.close()


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Grey, grey+alpha, RGB, RGBA in uint8/uint16/float -> RGB uint8 (alpha composited on white)."""
    a = np.asarray(array)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype.kind == "f":
        a = np.clip(a * (255.0 if a.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise SlideError(f"unsupported image pixel type {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise SlideError(f"unsupported image shape {array.shape}; expected (H, W[, C]) with C in 1..4")
    colour = a[..., :3] if a.shape[2] >= 3 else np.repeat(a[..., :1], 3, axis=2)
    if a.shape[2] in (2, 4):
        alpha = a[..., -1:].astype(np.uint16)
        colour = ((colour.astype(np.uint16) * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(colour)


class _ImageBackend(_Backend):
    """A plain (non-pyramidal) PNG/JPEG/TIFF as a one-level slide, pixels held decoded in memory."""

    def __init__(self, path: Path, pixels: np.ndarray, recorded_mpp: tuple[float, float] | None,
                 vendor: str, properties: dict[str, str]) -> None:
        self._path = path
        self._pixels = pixels
        h, w = pixels.shape[:2]
        self.vendor = vendor
        self.level_dimensions = ((w, h),)
        self.level_downsamples = (1.0,)
        self.properties = properties
        self.objective_power = None
        self.recorded_mpp = recorded_mpp

    def read_level(self, x0: int, y0: int, level: int, width_l: int, height_l: int) -> np.ndarray:
        h, w = self._pixels.shape[:2]
        return _read_on_white(x0, y0, width_l, height_l, (w, h),
                              lambda xa, ya, xb, yb: self._pixels[ya:yb, xa:xb])

    @property
    def associated_images(self) -> list[str]:
        return []

    def associated_image(self, name: str) -> np.ndarray:
        raise SlideError(f"{self._path} is a plain image and has no associated image {name!r}")


def _read_on_white(x: int, y: int, width: int, height: int, size: tuple[int, int],
                   read: Callable[[int, int, int, int], np.ndarray]) -> np.ndarray:
    """A white ``(height, width, 3)`` uint8 window at ``(x, y)`` (pixels of one level of ``size`` = (w, h)),
    holding ``read(xa, ya, xb, yb)`` (RGB uint8 of ``[ya:yb, xa:xb]``) where the window overlaps the level."""
    out = np.full((max(height, 0), max(width, 0), 3), 255, np.uint8)
    xa, ya = max(x, 0), max(y, 0)
    xb, yb = min(x + width, size[0]), min(y + height, size[1])
    if xa < xb and ya < yb:
        out[ya - y:yb - y, xa - x:xb - x] = read(xa, ya, xb, yb)
    return out


def open_openslide(path: Path) -> _OpenSlideBackend | None:
    """The OpenSlide backend, or None when OpenSlide does not recognise the file."""
    try:
        handle = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        return None
    except openslide.OpenSlideError as exc:
        raise SlideError(f"cannot open {path}: the slide is corrupt or truncated ({exc})") from exc
    try:
        return _OpenSlideBackend(path, handle)
    except openslide.OpenSlideError as exc:
        handle.close()
        raise SlideError(f"cannot open {path}: the slide is corrupt or truncated ({exc})") from exc


def open_plain_image(path: Path) -> _Backend:
    """A PNG/JPEG/TIFF/BMP as a one-level slide; raises :class:`SlideError` when it cannot be decoded."""
    if path.suffix.lower() in (".tif", ".tiff"):
        return _open_tiff(path)
    try:
        with Image.open(path) as image:
            image.load()
            dpi = image.info.get("dpi")
            pixels = _to_rgb_uint8(np.asarray(image.convert("RGBA") if image.mode not in ("RGB", "L", "RGBA")
                                              else image))
    except Image.DecompressionBombError as exc:
        raise SlideError(f"{path} is too large for a plain image; convert it to a pyramidal TIFF") from exc
    except (OSError, ValueError) as exc:
        raise SlideError(f"cannot read {path}: not a slide or image wsiseg can read ({exc})") from exc
    mpp: tuple[float, float] | None = None
    if dpi:
        mx, my = mpp_from_resolution(float(dpi[0]), "inch"), mpp_from_resolution(float(dpi[1]), "inch")
        mpp = (mx, my) if mx is not None and my is not None else None
    return _ImageBackend(path, pixels, mpp, "image", {})


class _TiffBackend(_Backend):
    """TIFFs OpenSlide does not open (stripped, SubIFD/OME pyramids, grey, 16-bit) through tifffile + zarr.

    Regions are decoded chunk by chunk (strips or tiles), so memory follows the region, not the image.
    Reads go through one file handle, so they are serialised by a lock.
    """

    def __init__(self, path: Path, tif: tifffile.TiffFile) -> None:
        import zarr

        self._path = path
        self._tif = tif
        series = tif.series[0]
        if series.axes not in ("YX", "YXS"):
            raise SlideError(f"cannot read {path}: unsupported TIFF layout (axes {series.axes}; expected "
                             "Y, X and optional samples)")
        self._arrays = [zarr.open_array(series.aszarr(level=i), mode="r") for i in range(len(series.levels))]
        self.level_dimensions = tuple((int(a.shape[1]), int(a.shape[0])) for a in self._arrays)
        w0 = self.level_dimensions[0][0]
        self.level_downsamples = tuple(w0 / w for w, _ in self.level_dimensions)
        self.vendor = "tiff"
        self.properties = {}
        self.objective_power = None
        self.recorded_mpp = _ome_mpp(tif.ome_metadata) if tif.is_ome else None
        if self.recorded_mpp is None:
            page = tif.pages.first
            x_res, y_res = page.get_resolution()
            unit = tifffile.RESUNIT(page.resolutionunit).name.lower()
            mx, my = mpp_from_resolution(float(x_res), unit), mpp_from_resolution(float(y_res), unit)
            self.recorded_mpp = (mx, my) if mx is not None and my is not None else None
        self._lock = threading.Lock()

    def read_level(self, x0: int, y0: int, level: int, width_l: int, height_l: int) -> np.ndarray:
        ds = self.level_downsamples[level]

        def read(xa: int, ya: int, xb: int, yb: int) -> np.ndarray:
            try:
                with self._lock:
                    part = np.asarray(self._arrays[level][ya:yb, xa:xb])
            except Exception as exc:  # any decoder failure: corrupt or truncated data
                raise SlideError(f"cannot read {self._path}: the file is corrupt or truncated ({exc})"
                                 ) from exc
            return _to_rgb_uint8(part)

        return _read_on_white(round(x0 / ds), round(y0 / ds), width_l, height_l, self.level_dimensions[level],
                              read)

    @property
    def associated_images(self) -> list[str]:
        return []

    def associated_image(self, name: str) -> np.ndarray:
        raise SlideError(f"{self._path} is a plain TIFF and has no associated image {name!r}")

    def close(self) -> None:
        self._tif.close()


_OME_UM_PER_UNIT = {"µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4}


def _ome_mpp(xml: str | None) -> tuple[float, float] | None:
    """``PhysicalSizeX/Y`` (with their units, default um) of the first OME ``Pixels`` element."""
    if not xml:
        return None
    import re

    pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", xml)
    if pixels is None:
        return None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(0)))
    sizes = []
    for axis in ("X", "Y"):
        value = _float_or_none(attrs.get(f"PhysicalSize{axis}"))
        scale = _OME_UM_PER_UNIT.get(attrs.get(f"PhysicalSize{axis}Unit", "µm"))
        sizes.append(_plausible(value * scale) if value is not None and scale is not None else None)
    return (sizes[0], sizes[1]) if sizes[0] is not None and sizes[1] is not None else None


def tiff_pyramid_instead(path: Path, backend: _OpenSlideBackend) -> _Backend:
    """OpenSlide reads SubIFD pyramids (OME-TIFF from QuPath/Bio-Formats) as one-level generic TIFFs
    without MPP; tifffile sees their levels and OME resolution. Use it when it knows more."""
    if backend.vendor != "generic-tiff" or len(backend.level_dimensions) > 1:
        return backend
    try:
        alternative = _open_tiff(path)
    except SlideError:
        return backend
    more_levels = len(alternative.level_dimensions) > 1
    more_mpp = backend.recorded_mpp is None and alternative.recorded_mpp is not None
    if (more_levels or more_mpp) and alternative.level_dimensions[0] == backend.level_dimensions[0]:
        backend.close()
        return alternative
    alternative.close()
    return backend


def _open_tiff(path: Path) -> _TiffBackend:
    try:
        tif = tifffile.TiffFile(path)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise SlideError(f"cannot read {path}: not a slide or image wsiseg can read ({exc})") from exc
    try:
        return _TiffBackend(path, tif)
    except SlideError:
        tif.close()
        raise
    except Exception as exc:  # malformed tags/structure
        tif.close()
        raise SlideError(f"cannot read {path}: not a TIFF wsiseg can read ({exc})") from exc
