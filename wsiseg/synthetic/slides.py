"""Synthetic H&E-like pyramidal slides with exact ground truth, for tests, benchmarks and the demo.

The label map comes from five smooth random fields (one per class) defined on a coarse grid of
``cell_um``-micron cells; the class of level-0 pixel ``(x, y)`` is the argmax of the fields bilinearly
interpolated at the pixel centre. That rule is evaluated per pixel with elementwise arithmetic, so it gives
bit-identical labels whichever block it is computed in: the pixels written and :meth:`SyntheticTruth.labels`
agree exactly. Regions are blobs of a few hundred microns; texture is at the cell scale:

- background: near-white glass;
- stroma: pink matrix with wavy darker eosin fibres;
- tumour: purple cytoplasm crowded with large dark nuclei;
- necrosis: pale eosinophilic ground with small dark debris;
- inflammatory: dense small dark lymphocyte nuclei.

Each class's texture is a tileable ``_TEXTURE_PX``-pixel square rendered once; a slide pixel takes the texel
of its class at its coordinates modulo that period. The class mean colours (:attr:`SyntheticTruth.palette`)
are far apart compared with the spread of 15x15-pixel local means, so a nearest-mean "oracle" classifier
recovers the labels away from borders.

Writing streams: level 0 is rendered tile by tile into tifffile's tile iterator; each rendered tile is also
box-reduced into a temporary file holding the next level (read back tile by tile for the next page, and
reduced again). Memory is a few tiles plus the five ~3 MiB textures, independent of the slide size.
"""

from __future__ import annotations

import enum
import math
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

from wsiseg.classes import ClassList
from wsiseg.errors import ConfigError, OutputError

#: The classes of synthetic slides; index 0 is background glass.
SYNTHETIC_CLASSES = ClassList.from_names(
    ["background", "stroma", "tumour", "necrosis", "inflammatory"],
    [(230, 230, 230), (255, 105, 180), (128, 0, 128), (255, 215, 0), (0, 90, 255)],
)

_TILE = 512  # tile side in the TIFF, level-0 and reduced levels alike
_TEXTURE_PX = 1024  # texture period in level-0 pixels
_JPEG_QUALITY = 90


class SlideLayout(enum.Enum):
    """How the pyramid is stored.

    ``SVS``: Aperio-like (ImageDescription ``Aperio Image Library ...|AppMag = ..|MPP = ..``, levels at
    downsample 4, 16, ..., a thumbnail as the second page and a label image); OpenSlide vendor ``aperio``.
    ``TIFF``: generic tiled TIFF (levels at downsample 2, 4, ... as further pages, MPP in the resolution
    tags); OpenSlide vendor ``generic-tiff``.
    """

    SVS = "svs"
    TIFF = "tiff"


@dataclass(frozen=True)
class SyntheticTruth:
    """The exact ground truth of a synthetic slide written by :func:`write_synthetic_slide`.

    ``width0, height0`` level-0 pixels at ``mpp`` um/px; ``seed`` and ``cell_um`` define the label field.
    """

    path: Path
    width0: int
    height0: int
    mpp: float
    seed: int
    layout: SlideLayout
    cell_um: float
    level_downsamples: tuple[float, ...]

    @property
    def classes(self) -> ClassList:
        return SYNTHETIC_CLASSES

    @property
    def palette(self) -> np.ndarray:
        """Mean RGB colour of each class's texture, float32 ``(k, 3)`` in 0..255 (row ``i`` = class ``i``)."""
        return _palette(self.mpp).copy()

    @cached_property
    def _field(self) -> _LabelField:
        return _LabelField.create(self.width0, self.height0, self.mpp, self.seed, self.cell_um)

    def labels(self, mpp: float | None = None) -> np.ndarray:
        """Class indices uint8 ``(height_t, width_t)`` at ``mpp`` um/px (default: level 0).

        Exact at level 0. At other resolutions each target pixel takes the label of the level-0 pixel
        under its centre; the size is ``ceil(size0 * mpp0 / mpp)`` like ``Slide.size_at``.
        """
        return self._field.labels_at(self.mpp if mpp is None else mpp)

    def labels_region(self, x0: int, y0: int, width_t: int, height_t: int, mpp: float) -> np.ndarray:
        """Labels uint8 ``(height_t, width_t)`` of the region ``Slide.read_region`` would read."""
        return self._field.labels_region(x0, y0, width_t, height_t, mpp)

    def render(self, x0: int, y0: int, width0: int, height0: int) -> np.ndarray:
        """The level-0 pixels RGB uint8 ``(height0, width0, 3)`` from ``(x0, y0)`` as rendered before JPEG
        compression (any coordinates; the texture continues past the slide's edge)."""
        return render_region(self._field, x0, y0, width0, height0)


# ---------------------------------------------------------------------------------------------------
# The label field
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LabelField:
    """Per-class smooth fields on a coarse grid; node ``(i, j)`` sits at level-0 ``(j * cell, i * cell)``."""

    grids: np.ndarray  # (k, rows, cols) float32
    cell_px: float
    width0: int
    height0: int
    mpp: float

    @classmethod
    def create(cls, width0: int, height0: int, mpp: float, seed: int, cell_um: float) -> _LabelField:
        cell_px = cell_um / mpp
        rows = math.ceil(height0 / cell_px) + 2
        cols = math.ceil(width0 / cell_px) + 2
        rng = np.random.default_rng(seed)
        k = len(SYNTHETIC_CLASSES)
        sigma = 3.0  # cells: regions of ~5-10 cells across
        margin = int(3 * sigma) + 1
        noise = rng.standard_normal((k, rows + 2 * margin, cols + 2 * margin))
        grids = np.stack([ndimage.gaussian_filter(n, sigma, mode="wrap") for n in noise])
        grids = grids[:, margin:-margin, margin:-margin]
        grids /= grids.std(axis=(1, 2), keepdims=True) + 1e-12
        grids[0] += 0.35  # a little more glass than any one tissue class
        return cls(np.ascontiguousarray(grids, dtype=np.float32), cell_px, width0, height0, mpp)

    def _axis(self, coords0: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
        u = (coords0.astype(np.float64) + 0.5) / self.cell_px
        i = np.clip(np.floor(u).astype(np.int64), 0, n_nodes - 2)
        return i, u - i

    def labels_at_coords(self, xs0: np.ndarray, ys0: np.ndarray) -> np.ndarray:
        """Labels uint8 ``(len(ys0), len(xs0))`` of level-0 pixel columns ``xs0`` and rows ``ys0``."""
        _, rows, cols = self.grids.shape
        j, tx = self._axis(xs0, cols)
        i, ty = self._axis(ys0, rows)
        r_lo, r_hi = int(i.min()), int(i.max()) + 2
        g = self.grids[:, r_lo:r_hi]
        # Interpolate along x on the needed grid rows, then along y. Every value is the same elementwise
        # float32 expression of the same inputs wherever the block starts, so labels are block-independent.
        tx32, ty32 = tx.astype(np.float32), ty.astype(np.float32)[:, None]
        gx = g[:, :, j] * (1 - tx32) + g[:, :, j + 1] * tx32  # (k, rows, width)
        ii = i - r_lo
        best = np.empty((len(ys0), len(xs0)), np.float32)
        out = np.zeros((len(ys0), len(xs0)), np.uint8)
        for c in range(gx.shape[0]):
            lo, hi = gx[c, ii], gx[c, ii + 1]
            hi -= lo
            hi *= ty32
            hi += lo  # = lo + (hi - lo) * ty
            if c == 0:
                best[:] = hi
                continue
            better = hi > best
            out[better] = c
            np.maximum(best, hi, out=best)
        return out

    def labels_region(self, x0: int, y0: int, width_t: int, height_t: int, mpp: float) -> np.ndarray:
        """Labels of the region ``Slide.read_region(x0, y0, width_t, height_t, mpp)`` reads: each target
        pixel takes the label of the level-0 pixel under its centre."""
        s = mpp / self.mpp  # level-0 pixels per target pixel
        xs0 = np.floor(x0 + (np.arange(width_t) + 0.5) * s).astype(np.int64)
        ys0 = np.floor(y0 + (np.arange(height_t) + 0.5) * s).astype(np.int64)
        return self.labels_at_coords(xs0, ys0)

    def labels_at(self, mpp: float) -> np.ndarray:
        """The whole label map at ``mpp`` um/px, computed in row blocks of ~1M pixels."""
        s = mpp / self.mpp
        width_t = max(1, math.ceil(self.width0 / s - 1e-6))
        height_t = max(1, math.ceil(self.height0 / s - 1e-6))
        out = np.empty((height_t, width_t), np.uint8)
        xs0 = np.floor((np.arange(width_t) + 0.5) * s).astype(np.int64)
        block = max(1, 1_000_000 // width_t)
        for y_t in range(0, height_t, block):
            h = min(block, height_t - y_t)
            ys0 = np.floor((np.arange(y_t, y_t + h) + 0.5) * s).astype(np.int64)
            out[y_t:y_t + h] = self.labels_at_coords(xs0, ys0)
        return out


# ---------------------------------------------------------------------------------------------------
# Textures
# ---------------------------------------------------------------------------------------------------
def _stamp_disks(canvas: np.ndarray, rng: np.random.Generator, count: int, radius_px: float,
                 colour: np.ndarray, jitter: float, elongation: float = 1.0) -> None:
    """Paint ``count`` filled ellipses (wrapping at the borders) of about ``radius_px`` into ``canvas``."""
    size = canvas.shape[0]
    r = max(radius_px, 0.8)
    span = math.ceil(r * max(elongation, 1.0)) + 1
    dy, dx = np.mgrid[-span:span + 1, -span:span + 1]
    cy = rng.integers(0, size, count)
    cx = rng.integers(0, size, count)
    scale = rng.uniform(1 - jitter, 1 + jitter, count)
    angle = rng.uniform(0, np.pi, count)
    for lo in range(0, count, 2048):  # in chunks, to keep the index arrays small
        sl = slice(lo, lo + 2048)
        ca, sa = np.cos(angle[sl])[:, None, None], np.sin(angle[sl])[:, None, None]
        u = (dx[None] * ca + dy[None] * sa) / (r * scale[sl, None, None] * elongation)
        v = (-dx[None] * sa + dy[None] * ca) / (r * scale[sl, None, None])
        n_idx, yy, xx = np.nonzero(u * u + v * v <= 1.0)
        canvas[(cy[sl][n_idx] + dy[yy, xx]) % size, (cx[sl][n_idx] + dx[yy, xx]) % size] = colour


def _smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Tileable zero-mean unit-std noise blurred with a Gaussian of ``sigma_px``."""
    n = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma_px, mode="wrap")
    return np.asarray(n / (n.std() + 1e-12))


@lru_cache(maxsize=4)
def _textures(mpp: float) -> np.ndarray:
    """uint8 ``(k, P, P, 3)`` tileable textures for level-0 pixels of ``mpp`` um/px (deterministic)."""
    size = _TEXTURE_PX
    um = 1.0 / mpp  # pixels per micron
    rng = np.random.default_rng(20240611)
    k = len(SYNTHETIC_CLASSES)
    out = np.empty((k, size, size, 3), np.uint8)
    area_um2 = (size / um) ** 2

    def noise(sigma: float) -> np.ndarray:
        return rng.standard_normal((size, size, 1), dtype=np.float32) * np.float32(sigma)

    def base(colour: tuple[float, float, float], sigma: float) -> np.ndarray:
        img = noise(sigma) + np.asarray(colour, np.float32)
        return np.clip(img, 0, 255, out=img)

    # background: glass
    out[0] = base((242, 241, 240), 2.0)

    # stroma: pink matrix with wavy eosin fibres along the diagonal, ~4 um apart. The phase advances by
    # a whole number of turns across the texture in x and in y, so the texture tiles without seams.
    img = base((236, 160, 200), 4.0)
    turns = max(1, round(size / (4.0 * um * math.sqrt(2))))
    ramp = np.arange(size, dtype=np.float32) * np.float32(2 * np.pi * turns / size)
    phase = ramp[:, None] + ramp[None, :] + _smooth_noise(rng, size, 12 * um).astype(np.float32) * 3
    fibre = np.clip((np.cos(phase) - 0.35) / 0.65, 0, 1)[..., None]
    img += (np.array([200, 96, 160], np.float32) - img) * fibre
    out[1] = np.clip(img, 0, 255)

    # tumour: purple cytoplasm crowded with large dark nuclei
    img = base((170, 110, 190), 5.0).astype(np.uint8)
    _stamp_disks(img, rng, int(area_um2 / 36), 2.6 * um, np.array([122, 66, 162], np.uint8), 0.25, 1.3)
    out[2] = np.clip(noise(4.0) + img, 0, 255)

    # necrosis: pale eosinophilic ground with small dark debris
    img = base((236, 204, 216), 4.0).astype(np.uint8)
    _stamp_disks(img, rng, int(area_um2 / 20), 0.6 * um, np.array([160, 120, 170], np.uint8), 0.4, 1.0)
    out[3] = img

    # inflammatory: dense small dark lymphocytes on a bluish ground
    img = base((80, 60, 140), 5.0).astype(np.uint8)
    _stamp_disks(img, rng, int(area_um2 / 9), 1.6 * um, np.array([42, 26, 92], np.uint8), 0.2, 1.0)
    out[4] = np.clip(noise(4.0) + img, 0, 255)
    return out


@lru_cache(maxsize=4)
def _palette(mpp: float) -> np.ndarray:
    return np.asarray(_textures(mpp).reshape(len(SYNTHETIC_CLASSES), -1, 3).mean(axis=1), np.float32)


@lru_cache(maxsize=4)
def _texture_words(mpp: float) -> np.ndarray:
    """The textures as one flat uint32 array of RGBA words, ``k * P * P`` long, for a single gather."""
    tex = _textures(mpp)
    rgba = np.empty((*tex.shape[:3], 4), np.uint8)
    rgba[..., :3] = tex
    rgba[..., 3] = 255
    return rgba.reshape(-1).view(np.uint32)


def render_region(field: _LabelField, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 ``(height, width, 3)`` of level-0 pixels starting at ``(x0, y0)`` (any coordinates)."""
    labels = field.labels_at_coords(np.arange(x0, x0 + width), np.arange(y0, y0 + height))
    p = _TEXTURE_PX
    ys = (np.arange(y0, y0 + height) % p).astype(np.int32)
    xs = (np.arange(x0, x0 + width) % p).astype(np.int32)
    index = labels.astype(np.int32)
    index *= p * p
    index += ys[:, None] * p
    index += xs[None, :]
    words = np.take(_texture_words(field.mpp), index)
    return np.ascontiguousarray(words.view(np.uint8).reshape(height, width, 4)[..., :3])


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------
def _box_reduce(block: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor x factor`` pixel blocks (Pillow's C ``reduce``), RGB uint8."""
    return np.asarray(Image.fromarray(block).reduce(factor))


class _TileStore:
    """One pyramid level's pixels in a temporary file, tile-major, so that a tile is one contiguous read.

    Coarser levels are made while the finer one is written, but a TIFF writer takes pages one after the
    other, so they wait here on disk rather than in memory. Parts of edge tiles outside the level read
    as white.
    """

    def __init__(self, path: Path, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.n_cols, self.n_rows = math.ceil(width / _TILE), math.ceil(height / _TILE)
        self._file = open(path, "w+b")  # noqa: SIM115 - closed by close()
        self._file.truncate(self.n_rows * self.n_cols * _TILE * _TILE * 3)

    def _offset(self, row: int, col: int) -> int:
        return (row * self.n_cols + col) * _TILE * _TILE * 3

    def write(self, y: int, x: int, block: np.ndarray) -> None:
        """Store ``block`` (h, w, 3) at level pixel ``(x, y)``; it must lie within one tile."""
        base = self._offset(y // _TILE, x // _TILE)
        oy, ox = y % _TILE, x % _TILE
        for i in range(block.shape[0]):
            self._file.seek(base + ((oy + i) * _TILE + ox) * 3)
            self._file.write(np.ascontiguousarray(block[i]).tobytes())

    def tile(self, row: int, col: int) -> np.ndarray:
        self._file.seek(self._offset(row, col))
        data = self._file.read(_TILE * _TILE * 3)
        tile = np.frombuffer(data, np.uint8).reshape(_TILE, _TILE, 3).copy()
        tile[max(0, self.height - row * _TILE):] = 255
        tile[:, max(0, self.width - col * _TILE):] = 255
        return tile

    def close(self) -> None:
        self._file.close()


def _reduce_into(tile: np.ndarray, row: int, col: int, nxt: _TileStore | None, factor: int) -> None:
    """Box-reduce a tile of one level by ``factor`` into the next level's store."""
    if nxt is None:
        return
    small = _box_reduce(tile, factor)
    y, x = row * _TILE // factor, col * _TILE // factor
    hh, ww = min(small.shape[0], nxt.height - y), min(small.shape[1], nxt.width - x)
    if hh > 0 and ww > 0:
        nxt.write(y, x, small[:hh, :ww])


def _level0_tiles(field: _LabelField, n_rows: int, n_cols: int, nxt: _TileStore | None,
                  factor: int) -> Iterator[np.ndarray]:
    """Rendered level-0 tiles in row-major order, each also reduced into the next level."""
    for r in range(n_rows):
        for c in range(n_cols):
            tile = render_region(field, c * _TILE, r * _TILE, _TILE, _TILE)
            _reduce_into(tile, r, c, nxt, factor)
            yield tile


def _level_tiles(level: _TileStore, nxt: _TileStore | None, factor: int) -> Iterator[np.ndarray]:
    """Tiles of a stored level in row-major order, each also reduced into the next level."""
    for r in range(level.n_rows):
        for c in range(level.n_cols):
            tile = level.tile(r, c)
            _reduce_into(tile, r, c, nxt, factor)
            yield tile


def _level_sizes(width0: int, height0: int, factor: int, min_side: int) -> list[tuple[int, int]]:
    sizes = [(width0, height0)]
    while True:
        w, h = sizes[-1]
        nw, nh = math.ceil(w / factor), math.ceil(h / factor)
        if min(nw, nh) < min_side:
            return sizes
        sizes.append((nw, nh))


def write_synthetic_slide(path: str | Path, width0: int, height0: int, mpp: float = 0.5,
                          layout: SlideLayout = SlideLayout.SVS, seed: int = 0, *,
                          cell_um: float = 40.0, record_mpp: bool = True) -> SyntheticTruth:
    """Write an H&E-like pyramidal slide of ``width0 x height0`` level-0 pixels at ``mpp`` um/px.

    ``layout`` chooses Aperio-like SVS or generic tiled TIFF (see :class:`SlideLayout`); ``seed`` the
    label field; ``cell_um`` the grid step of the label field (regions are ~5-10 cells across).
    ``record_mpp=False`` writes a file without any resolution metadata (to test ``--slide-mpp``).
    Returns the exact ground truth. Memory stays at a few tiles whatever the size.
    """
    path = Path(path)
    if width0 < 1 or height0 < 1:
        raise ConfigError(f"synthetic slide size must be positive, got {width0}x{height0}")
    if not (math.isfinite(mpp) and mpp > 0):
        raise ConfigError(f"mpp must be positive, got {mpp}")
    layout = SlideLayout(layout)
    factor = 4 if layout is SlideLayout.SVS else 2
    sizes = _level_sizes(width0, height0, factor, 256)
    field = _LabelField.create(width0, height0, mpp, seed, cell_um)
    bigtiff = width0 * height0 * 3 > 2**31
    common: dict[str, Any] = {"photometric": "rgb", "compression": "jpeg", "tile": (_TILE, _TILE),
                              "compressionargs": {"level": _JPEG_QUALITY}, "metadata": None}
    app_mag = max(1, round(10.0 / mpp))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".wsiseg-synth-", dir=path.parent))
    stores: list[_TileStore] = []
    try:
        stores = [_TileStore(tmpdir / f"level{i}.raw", w, h) for i, (w, h) in enumerate(sizes) if i > 0]
        with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
            for level, (w, h) in enumerate(sizes):
                nxt = stores[level] if level < len(stores) else None
                if level == 0:
                    tiles = _level0_tiles(field, math.ceil(h / _TILE), math.ceil(w / _TILE), nxt, factor)
                else:
                    tiles = _level_tiles(stores[level - 1], nxt, factor)
                kwargs: dict[str, Any] = dict(common)
                if layout is SlideLayout.SVS:
                    desc = (f"Aperio Image Library v12.0.0 \r\n{width0}x{height0} [0,0 {width0}x{height0}] "
                            f"({_TILE}x{_TILE}) JPEG/RGB Q={_JPEG_QUALITY}")
                    if level == 0 and record_mpp:
                        desc += f"|AppMag = {app_mag}|MPP = {mpp:.6g}"
                    elif level > 0:
                        desc += f" -> {w}x{h} - "
                    kwargs["description"] = desc
                elif record_mpp:
                    kwargs["resolution"] = (1e4 / (mpp * (width0 / w)), 1e4 / (mpp * (height0 / h)))
                    kwargs["resolutionunit"] = "CENTIMETER"
                if level > 0:
                    kwargs["subfiletype"] = 1
                tif.write(tiles, shape=(h, w, 3), dtype=np.uint8, **kwargs)
                if level == 0 and layout is SlideLayout.SVS:
                    _write_svs_thumbnail(tif, field, width0, height0)
            if layout is SlideLayout.SVS:
                _write_svs_label(tif)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise OutputError(f"cannot write synthetic slide {path}: {exc}") from exc
    finally:
        for store in stores:
            store.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    downsamples = tuple(width0 / w for w, _ in sizes)
    return SyntheticTruth(path, width0, height0, mpp, seed, layout, cell_um, downsamples)


def _write_svs_thumbnail(tif: tifffile.TiffWriter, field: _LabelField, width0: int, height0: int) -> None:
    """Aperio's second page: a stripped thumbnail (here the label map painted with the palette)."""
    scale = max(width0, height0) / 256
    tw, th = max(1, round(width0 / scale)), max(1, round(height0 / scale))
    labels = field.labels_region(0, 0, tw, th, scale * field.mpp)
    thumb = np.clip(_palette(field.mpp), 0, 255).astype(np.uint8)[labels]
    tif.write(thumb, photometric="rgb", compression="jpeg", subfiletype=0, metadata=None,
              description=f"Aperio Image Library v12.0.0 \r\n{width0}x{height0} -> {tw}x{th} - ")


def _write_svs_label(tif: tifffile.TiffWriter) -> None:
    """A small label image after the levels; OpenSlide names it from its description ("label ...")."""
    label = np.full((96, 96, 3), 255, np.uint8)
    label[16:80, 16:80] = (20, 20, 20)
    tif.write(label, photometric="rgb", compression="lzw", subfiletype=1, metadata=None,
              description="Aperio Image Library v12.0.0\r\nlabel 96x96")
