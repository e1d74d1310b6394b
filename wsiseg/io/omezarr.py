"""The segmentation output: an OME-Zarr probability pyramid plus a ``labels/classes`` label pyramid.

Layout (NGFF 0.4 on zarr v2 by default, NGFF 0.5 on zarr v3 as an option)::

    out.zarr/
      0 .. n-1            uint8 (c, y, x) class probabilities, 0..255 (p * 255 rounded); level l is 2**l
                          times coarser than level 0 (mean of the finer probabilities)
      labels/classes/0 .. n-1
                          uint8 (y, x): 0 = not analysed (outside tissue), i + 1 = class index i
                          (argmax of that level's probabilities; 0 where less than half the area was analysed)

Scales are in micrometres; ``omero.channels[*].label`` names the classes; ``image-label`` gives colours and
class names. The root attribute ``wsiseg`` says what the output is (slide, model, parameters, classes,
times, composition, QC): :class:`wsiseg.io.output_metadata.OutputMetadata`, written by
:meth:`SegmentationWriter.write_metadata` and read by :func:`open_segmentation` and
:func:`read_output_metadata`.

Everything here is torch-free; :class:`SegmentationWriter` is what :mod:`wsiseg.infer` writes with and
:func:`open_segmentation` what :mod:`wsiseg.export` (and the preview) read with.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numcodecs
import numpy as np
import zarr

from wsiseg.classes import ClassList
from wsiseg.errors import OutputError
from wsiseg.io import _zarr_chunks
from wsiseg.io.arrays import LevelArray
from wsiseg.io.atomic import write_bytes
from wsiseg.io.output_metadata import ATTRIBUTE, OutputMetadata

#: Coarsest levels stop once the whole image fits in this many pixels per side.
MIN_LEVEL_SIZE = 256
#: Chunks of coarse levels are never smaller than this (pieces then fill them in several writes).
MIN_CHUNK = 128


class NgffVersion(str, enum.Enum):
    """OME-NGFF version of the output: 0.4 (zarr v2; what most viewers read today) or 0.5 (zarr v3)."""

    V04 = "0.4"
    V05 = "0.5"

    @property
    def zarr_format(self) -> int:
        return 2 if self is NgffVersion.V04 else 3


def n_levels_for(width: int, height: int, chunk_size: int) -> int:
    """Pyramid depth: halve until the image fits in :data:`MIN_LEVEL_SIZE` (at most ``log2(chunk_size)``)."""
    levels, size = 1, max(width, height)
    while size > MIN_LEVEL_SIZE and (1 << levels) <= chunk_size:
        size = math.ceil(size / 2)
        levels += 1
    return levels


def level_chunk(chunk_size: int, level: int) -> int:
    """Zarr chunk side at ``level``: the level-0 chunk shrunk ``2**level`` times, >= :data:`MIN_CHUNK`."""
    return max(chunk_size >> level, min(MIN_CHUNK, chunk_size))


def downsample2(probs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """2x mean downsampling of ``(c, h, w)`` float32; odd edges are padded by replication.

    ``out`` (``(c, ceil(h / 2), ceil(w / 2))`` float32) receives the result when given (no allocation for
    even sizes); the sum is taken in the same order either way, so the values are bit-identical.
    """
    c, h, w = probs.shape
    if h % 2 or w % 2:
        probs = np.pad(probs, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    shape = (c, (h + 1) // 2, (w + 1) // 2)
    if out is None or out.shape != shape:
        out = np.empty(shape, np.float32)
    np.add(probs[:, 0::2, 0::2], probs[:, 1::2, 0::2], out=out)
    out += probs[:, 0::2, 1::2]
    out += probs[:, 1::2, 1::2]
    out *= np.float32(0.25)
    return out


def quantise(probs: np.ndarray, out: np.ndarray | None = None,
             scratch: np.ndarray | None = None) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 0..255 (``floor(p * 255 + 0.5)``, i.e. rounded half up).

    Blended probabilities are convex combinations of model outputs, so they never leave [0, 1] by more
    than float rounding (which the truncation absorbs). ``out`` (uint8) and ``scratch`` (float32), of
    ``probs``' shape, are reused when given.
    """
    if scratch is None or scratch.shape != probs.shape:
        scratch = np.empty(probs.shape, np.float32)
    if out is None or out.shape != probs.shape:
        out = np.empty(probs.shape, np.uint8)
    np.multiply(probs, np.float32(255.0), out=scratch, dtype=np.float32)
    scratch += np.float32(0.5)
    np.copyto(out, scratch, casting="unsafe")  # truncation, as astype
    return out


def labels_from_probs(probs: np.ndarray, out: np.ndarray | None = None,
                      scratch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Label image ``(h, w)`` uint8: ``argmax + 1`` where at least half the area was analysed, else 0.

    ``probs`` is ``(k, h, w)`` float; analysed pixels sum to 1 over ``k``, not-analysed ones to 0, so after
    averaging the sum is the analysed fraction. Ties go to the lower class index (like ``argmax``; a
    plane-by-plane running maximum is several times faster than ``argmax`` over the strided class axis).
    ``out`` (uint8 ``(h, w)``) and ``scratch`` (float32, float32, bool ``(h, w)``) are reused when given.
    """
    shape = probs.shape[1:]
    if scratch is None or scratch[0].shape != shape:
        scratch = (np.empty(shape, np.float32), np.empty(shape, np.float32), np.empty(shape, bool))
    if out is None or out.shape != shape:
        out = np.empty(shape, np.uint8)
    best, total, better = scratch
    flag = better.view(np.uint8)
    np.copyto(best, probs[0])
    np.copyto(total, probs[0])
    out.fill(1)
    for c in range(1, probs.shape[0]):
        np.greater(probs[c], best, out=better)
        # class c + 1 is larger than any label so far, so "c + 1 where better" is a maximum: branch-free
        flag *= np.uint8(c + 1)
        np.maximum(out, flag, out=out)
        np.maximum(best, probs[c], out=best)
        total += probs[c]
    np.greater_equal(total, np.float32(0.5), out=better)
    out *= flag  # 0 where less than half was analysed
    return out


def _hex(rgb: tuple[int, int, int]) -> str:
    return "{:02X}{:02X}{:02X}".format(*rgb)


def _multiscale(name: str, axes: list[dict[str, str]], n_levels: int, mpp: float, channel: bool,
                version: NgffVersion) -> dict[str, Any]:
    datasets = []
    for level in range(n_levels):
        s = mpp * (1 << level)
        scale = [1.0, s, s] if channel else [s, s]
        transforms = [{"type": "scale", "scale": scale}]
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    ms: dict[str, Any] = {"name": name, "axes": axes, "datasets": datasets,
                          "type": "mean" if channel else "mode"}
    if version is NgffVersion.V04:
        ms = {"version": "0.4", **ms}
    return ms


def _put_ome(group: zarr.Group, version: NgffVersion, attrs: dict[str, Any]) -> None:
    if version is NgffVersion.V04:
        group.attrs.update(attrs)
    else:
        group.attrs.update({"ome": {"version": "0.5", **attrs}})


_SPACE = [{"name": "y", "type": "space", "unit": "micrometer"},
          {"name": "x", "type": "space", "unit": "micrometer"}]


def _fast(array: Any) -> Any:
    return array.with_config({"write_empty_chunks": True})


@dataclass(frozen=True)
class LabelValue:
    """One value of a label image: its number, name and display colour (RGBA 0..255)."""

    value: int
    name: str
    rgba: tuple[int, int, int, int]


class SegmentationWriter:
    """Create (or reopen, to resume) a segmentation store and write finished chunks into it.

    Args:
        path: the ``.zarr`` directory.
        width, height: size of pyramid level 0 in its pixels (the run's output grid).
        mpp: microns per pixel of level 0.
        classes: the model's classes (channel ``i`` = class ``i``).
        chunk_size: level-0 chunk side (power of two); chunk ``(i, j)`` covers ``[i * chunk_size, ...)``.
        version: NGFF version.
    """

    def __init__(self, path: Path, *, width: int, height: int, mpp: float, classes: ClassList,
                 chunk_size: int, version: NgffVersion = NgffVersion.V04, create: bool = True) -> None:
        self.path = Path(path)
        self.width, self.height, self.mpp = width, height, mpp
        self.classes, self.chunk_size, self.version = classes, chunk_size, NgffVersion(version)
        self.n_levels = n_levels_for(width, height, chunk_size)
        if len(classes) > 254:
            raise OutputError(f"at most 254 classes fit a uint8 label image, got {len(classes)}")
        fmt = self.version.zarr_format
        self._locks: dict[tuple[int, int, int], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._tls = threading.local()
        self._dirs: set[Path] = set()
        self._codec = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
        try:
            if create:
                self._root = zarr.open_group(str(self.path), mode="w", zarr_format=fmt)  # type: ignore[arg-type]
                self._create()
            else:
                self._root = zarr.open_group(str(self.path), mode="r+", zarr_format=fmt)  # type: ignore[arg-type]
            # Every written chunk holds analysed pixels (fully empty chunks are never written), so skip
            # zarr's per-chunk "equals the fill value?" scan: it costs more than compressing the chunk.
            self._probs: list[Any] = [_fast(self._root[str(lv)]) for lv in range(self.n_levels)]
            self._labels: list[Any] = [_fast(self._root[f"labels/classes/{lv}"])
                                       for lv in range(self.n_levels)]
        except (OSError, KeyError, ValueError) as exc:
            raise OutputError(f"cannot write segmentation {self.path}: {exc}") from exc

    def _compressor(self) -> Any:
        if self.version is NgffVersion.V04:  # the same settings as self._codec (direct chunk writes)
            return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
        from zarr.codecs import BloscCodec

        return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")

    def _array(self, group: zarr.Group, name: str, shape: tuple[int, ...], chunks: tuple[int, ...],
               dims: list[str]) -> None:
        kwargs: dict[str, Any] = {"shape": shape, "chunks": chunks, "dtype": "uint8", "fill_value": 0,
                                  "compressors": self._compressor()}
        if self.version is NgffVersion.V04:
            kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        else:
            kwargs["dimension_names"] = dims
        group.create_array(name, **kwargs)

    def _create(self) -> None:
        k, v = len(self.classes), self.version
        labels_group = self._root.create_group("labels")
        classes_group = labels_group.create_group("classes")
        for level in range(self.n_levels):
            h, w = self.level_shape(level)
            c = level_chunk(self.chunk_size, level)
            self._array(self._root, str(level), (k, h, w), (k, c, c), ["c", "y", "x"])
            self._array(classes_group, str(level), (h, w), (c, c), ["y", "x"])
        axes = [{"name": "c", "type": "channel"}, *_SPACE]
        _put_ome(self._root, v, {
            "multiscales": [_multiscale("probabilities", axes, self.n_levels, self.mpp, True, v)],
            "omero": {
                "name": "probabilities",
                "channels": [
                    {"label": c.name, "color": _hex(c.color), "active": True, "coefficient": 1.0,
                     "family": "linear", "inverted": False,
                     "window": {"start": 0, "end": 255, "min": 0, "max": 255}}
                    for c in self.classes
                ],
                "rdefs": {"model": "color", "defaultZ": 0, "defaultT": 0},
            },
        })
        _put_ome(labels_group, v, {"labels": ["classes"]})
        image_label: dict[str, Any] = {
            "colors": [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
            + [{"label-value": i + 1, "rgba": [*c.color, 255]} for i, c in enumerate(self.classes)],
            "properties": [{"label-value": 0, "class": "not analysed"}]
            + [{"label-value": i + 1, "class": c.name} for i, c in enumerate(self.classes)],
            "source": {"image": "../../"},
        }
        if v is NgffVersion.V04:
            image_label = {"version": "0.4", **image_label}
        _put_ome(classes_group, v, {
            "multiscales": [_multiscale("classes", list(_SPACE), self.n_levels, self.mpp, False, v)],
            "image-label": image_label,
        })

    def write_label_image(self, name: str, values: list[LabelValue],
                          chunks: Iterable[tuple[tuple[int, int, int, int], np.ndarray]]) -> None:
        """Write (or rewrite) the label image ``labels/<name>`` beside ``labels/classes``: the same grid and
        pyramid, uint8, ``values`` naming and colouring its label values (NGFF ``image-label``), filled from
        ``chunks`` of ``(level-0 box (y0, y1, x0, x1), labels (h, w))`` whose boxes are ``chunk_size``
        aligned and cover the image. Coarser levels take the top-left pixel of each 2 x 2 square (labels
        are not averaged). Chunks are stored as :meth:`write_chunk` stores them. Single-threaded."""
        labels_group = cast(zarr.Group, self._root["labels"])
        if name in labels_group:
            del labels_group[name]
        group = labels_group.create_group(name)
        for level in range(self.n_levels):
            c = level_chunk(self.chunk_size, level)
            self._array(group, str(level), self.level_shape(level), (c, c), ["y", "x"])
        image_label: dict[str, Any] = {
            "colors": [{"label-value": v.value, "rgba": list(v.rgba)} for v in values],
            "properties": [{"label-value": v.value, "class": v.name} for v in values],
            "source": {"image": "../../"},
        }
        if self.version is NgffVersion.V04:
            image_label = {"version": "0.4", **image_label}
        _put_ome(group, self.version, {
            "multiscales": [_multiscale(name, list(_SPACE), self.n_levels, self.mpp, False, self.version)],
            "image-label": image_label,
        })
        names = list(_ome_attrs(labels_group).get("labels", ["classes"]))
        _put_ome(labels_group, self.version, {"labels": [*names, name] if name not in names else names})
        arrays = [group[str(level)] for level in range(self.n_levels)]
        for (y0, _, x0, _), data in chunks:
            for level, array in enumerate(arrays):
                piece = np.ascontiguousarray(data[::1 << level, ::1 << level])
                ly, lx = y0 >> level, x0 >> level
                chunk = level_chunk(self.chunk_size, level)
                if chunk == self.chunk_size >> level:  # whole zarr chunks, stored directly
                    self._put_chunk(array, (ly // chunk, lx // chunk), piece)
                else:
                    self._put_piece(array, ly, lx, chunk, piece)

    def level_shape(self, level: int) -> tuple[int, int]:
        """``(height, width)`` of pyramid ``level`` in its own pixels."""
        f = 1 << level
        return math.ceil(self.height / f), math.ceil(self.width / f)

    def write_chunk(self, box: tuple[int, int, int, int], probs: np.ndarray) -> None:
        """Write blended probabilities ``(k, h, w)`` float32 of level-0 ``box`` (y0, y1, x0, x1), all levels.

        ``box`` must be a level-0 chunk (``chunk_size`` aligned) so that every level receives whole zarr
        chunks or aligned pieces of its coarser chunks. Thread-safe for distinct boxes: pieces that share a
        coarse zarr chunk are written under a lock (read-modify-write).
        """
        y0, _, x0, _ = box
        p = probs
        for level in range(self.n_levels):
            if level:
                p = downsample2(p, self._scratch(("down", level), (p.shape[0], (p.shape[1] + 1) // 2,
                                                                   (p.shape[2] + 1) // 2), np.float32))
            ly, lx = y0 >> level, x0 >> level
            q = quantise(p, self._scratch("q", p.shape, np.uint8), self._scratch("qf", p.shape, np.float32))
            plane = p.shape[1:]
            labels = labels_from_probs(p, self._scratch("lab", plane, np.uint8),
                                       (self._scratch("best", plane, np.float32),
                                        self._scratch("total", plane, np.float32),
                                        self._scratch("better", plane, np.bool_)))
            chunk = level_chunk(self.chunk_size, level)
            if chunk == self.chunk_size >> level:  # whole zarr chunks: encoded and stored directly
                self._put_chunk(self._probs[level], (0, ly // chunk, lx // chunk), q)
                self._put_chunk(self._labels[level], (ly // chunk, lx // chunk), labels)
            else:  # a piece of a coarser chunk: read-modify-write under that chunk's lock
                with self._lock(level, ly // chunk, lx // chunk):
                    self._put_piece(self._probs[level], ly, lx, chunk, q)
                    self._put_piece(self._labels[level], ly, lx, chunk, labels)

    def _scratch(self, key: Any, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A C-contiguous ``shape`` array of this thread for ``key``, reused from chunk to chunk (no fresh
        pages per chunk and level). One flat buffer per key serves every shape (levels, edge chunks), so
        the scratch memory is that of one full chunk, however many chunk shapes the slide has; a key's
        previous contents are invalid once it is asked for again."""
        bufs: dict[Any, np.ndarray] | None = getattr(self._tls, "bufs", None)
        if bufs is None:
            bufs = self._tls.bufs = {}
        n = math.prod(shape)
        flat = bufs.get((key, np.dtype(dtype).str))
        if flat is None or flat.size < n:
            flat = bufs[(key, np.dtype(dtype).str)] = np.empty(n, dtype)
        return flat[:n].reshape(shape)

    def _put_chunk(self, array: Any, coords: tuple[int, ...], data: np.ndarray) -> None:
        """Store ``data`` as zarr chunk ``coords`` of ``array`` (edge chunks: the part inside the array).

        Equivalent to ``array[region] = data`` for a chunk-aligned region, without zarr's per-call
        machinery and atomically (why, and what it relies on: :mod:`wsiseg.io._zarr_chunks`). The bytes
        are the C-order chunk, padded with the fill value 0 to the full chunk shape, compressed with the
        array's Blosc settings; the file appears whole (written aside, then renamed).
        """
        shape = _zarr_chunks.chunk_shape(array)
        if data.shape != shape:
            full = self._scratch(("pad", data.dtype.str), shape, data.dtype)
            full.fill(0)
            full[tuple(slice(0, n) for n in data.shape)] = data
            data = full
        blob = self._codec.encode(np.ascontiguousarray(data))
        target = self._chunk_file(array, coords)
        parent = target.parent
        if parent not in self._dirs:
            parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(parent)
        write_bytes(target, blob)

    def _chunk_file(self, array: Any, coords: tuple[int, ...]) -> Path:
        return _zarr_chunks.chunk_file(self.path, array, self.version.zarr_format, coords)

    def _put_piece(self, array: Any, ly: int, lx: int, chunk: int, data: np.ndarray) -> None:
        """Write ``data`` (``(..., h, w)``) at level pixel ``(ly, lx)`` inside one zarr chunk.

        A read-modify-write of the chunk's file; the caller holds the chunk's lock.
        """
        lead = (0,) * (data.ndim - 2)
        coords = (*lead, ly // chunk, lx // chunk)
        shape = _zarr_chunks.chunk_shape(array)
        full = self._scratch(("piece", data.dtype.str), shape, data.dtype)
        try:
            with open(self._chunk_file(array, coords), "rb") as fh:
                blob = fh.read()
        except FileNotFoundError:
            full.fill(0)
        else:
            self._codec.decode(blob, out=full)
        y, x = ly % chunk, lx % chunk
        full[..., y:y + data.shape[-2], x:x + data.shape[-1]] = data
        self._put_chunk(array, coords, full)

    def _lock(self, level: int, ci: int, cj: int) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((level, ci, cj), threading.Lock())

    def write_metadata(self, metadata: OutputMetadata) -> None:
        """Store what the output is (the ``wsiseg`` root attribute), replacing what was there."""
        self._root.attrs[ATTRIBUTE] = metadata.to_json()


# -- reader ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segmentation:
    """A segmentation output opened for reading (arrays are lazy zarr arrays; nothing is loaded).

    ``probs[l]`` is ``(k, h_l, w_l)`` uint8, ``labels[l]`` is ``(h_l, w_l)`` uint8 (0 = not analysed,
    ``i + 1`` = class ``i``); ``mpp[l]`` is microns per pixel of level ``l``; ``slide_mpp`` is the slide's
    level-0 ``(mpp_x, mpp_y)`` so that level-``l`` pixel ``x`` is level-0 slide pixel
    ``x * mpp[l] / slide_mpp[0]``; ``metadata`` is what the run recorded.
    """

    path: Path
    version: NgffVersion
    classes: ClassList
    probs: list[LevelArray]
    labels: list[LevelArray]
    mpp: list[float]
    metadata: OutputMetadata
    label_images: dict[str, tuple[list[LevelArray], list[LabelValue]]] = field(default_factory=dict)

    def label_image(self, name: str) -> tuple[list[LevelArray], list[LabelValue]]:
        """The pyramid and values of ``labels/<name>`` other than ``classes`` (e.g. ``qc``); OutputError when
        the segmentation has none of that name."""
        if name not in self.label_images:
            have = ", ".join(sorted(self.label_images)) or "none"
            raise OutputError(f"{self.path} has no label image {name!r} (it has: {have})")
        return self.label_images[name]

    @property
    def n_levels(self) -> int:
        return len(self.labels)

    @property
    def finished(self) -> bool:
        """Whether the run that wrote it finished."""
        return self.metadata.finished is not None

    @property
    def slide_mpp(self) -> tuple[float, float]:
        """The slide's level-0 resolution ``(mpp_x, mpp_y)``, um/px."""
        return self.metadata.slide.mpp

    def downsample0(self, level: int) -> tuple[float, float]:
        """Level-0 slide pixels per pixel of ``level`` along ``(x, y)``."""
        return self.mpp[level] / self.slide_mpp[0], self.mpp[level] / self.slide_mpp[1]

    def level_for_mpp(self, mpp: float) -> int:
        """The finest level whose resolution is at least as coarse as ``mpp`` (or the coarsest level)."""
        for level, m in enumerate(self.mpp):
            if m >= mpp * (1 - 1e-6):
                return level
        return self.n_levels - 1


def _ome_attrs(group: zarr.Group) -> dict[str, Any]:
    attrs = cast(dict[str, Any], group.attrs.asdict())
    if "ome" in attrs:
        return dict(attrs["ome"])
    return dict(attrs)


def _open_group(path: Path) -> zarr.Group:
    if not path.exists():
        raise OutputError(f"segmentation {path} does not exist")
    try:
        return zarr.open_group(str(path), mode="r")
    except (OSError, ValueError, KeyError, zarr.errors.GroupNotFoundError) as exc:
        raise OutputError(f"{path} is not a zarr group: {exc}") from exc


def read_output_metadata(path: Path | str) -> OutputMetadata | None:
    """What the output at ``path`` says about itself; ``None`` when it is no zarr group or holds no
    ``wsiseg`` attribute (yet). OutputError when that attribute is malformed or from a newer wsiseg."""
    path = Path(path)
    try:
        root = _open_group(path)
    except OutputError:
        return None
    data = cast(dict[str, Any], root.attrs.asdict()).get(ATTRIBUTE)
    return None if not data else OutputMetadata.from_json(data, path)


def open_segmentation(path: Path | str) -> Segmentation:
    """Open a ``wsiseg segment`` output (NGFF 0.4 or 0.5); raises :class:`OutputError` if it is not one."""
    path = Path(path)
    root = _open_group(path)
    meta = _ome_attrs(root)
    data = cast(dict[str, Any], root.attrs.asdict()).get(ATTRIBUTE)
    if "multiscales" not in meta or not data:
        raise OutputError(f"{path} is not a wsiseg segmentation (no multiscales/wsiseg metadata)")
    metadata = OutputMetadata.from_json(data, path)
    version = NgffVersion(meta.get("version", meta["multiscales"][0].get("version", "0.4")))
    try:
        datasets = meta["multiscales"][0]["datasets"]
        probs = [root[d["path"]] for d in datasets]
        labels_group = root["labels/classes"]
        label_meta = _ome_attrs(labels_group)  # type: ignore[arg-type]
        labels = [labels_group[d["path"]] for d in label_meta["multiscales"][0]["datasets"]]  # type: ignore[index]
        mpp = [float(d["coordinateTransformations"][0]["scale"][-1]) for d in datasets]
    except (KeyError, IndexError, TypeError) as exc:
        raise OutputError(f"{path}: malformed wsiseg segmentation metadata ({exc})") from exc
    return Segmentation(path, version, metadata.classes, probs, labels, mpp,  # type: ignore[arg-type]
                        metadata, _other_label_images(root, path))


def _rgba(values: Any) -> tuple[int, int, int, int]:
    r, g, b, a = (int(v) for v in values)
    return r, g, b, a


def _other_label_images(root: zarr.Group, path: Path) -> dict[str, tuple[list[LevelArray], list[LabelValue]]]:
    """The label images of ``labels/`` other than ``classes``: their pyramids and values."""
    out: dict[str, tuple[list[LevelArray], list[LabelValue]]] = {}
    labels_group = cast(zarr.Group, root["labels"])
    for name in _ome_attrs(labels_group).get("labels", []):
        if name == "classes":
            continue
        try:
            group = cast(zarr.Group, labels_group[name])
            meta = _ome_attrs(group)
            arrays = [group[d["path"]] for d in meta["multiscales"][0]["datasets"]]
            image_label = meta["image-label"]
            colours = {int(c["label-value"]): _rgba(c["rgba"]) for c in image_label["colors"]}
            values = [LabelValue(int(p["label-value"]), str(p["class"]),
                                 colours.get(int(p["label-value"]), (0, 0, 0, 255)))
                      for p in image_label["properties"]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise OutputError(f"{path}: malformed label image {name!r} ({exc})") from exc
        out[str(name)] = (arrays, values)  # type: ignore[assignment]
    return out
