"""The common machinery of all data sets: a lazy list of patches cut from image/mask file pairs.

A data set is a sequence of ``(image, label)`` pairs: ``image`` uint8 ``(P, P, 3)`` RGB and ``label`` uint8
``(P, P)`` class indices of :attr:`PatchDataset.classes`, with :attr:`ClassList.ignore_index` for unlabelled
pixels. ``P`` (``patch_size``) is in pixels at the data set's target resolution. Files are decoded only when
a patch is read (the last few decoded files are kept), so building a data set reads only file headers.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsiseg.classes import ClassList
from wsiseg.errors import DatasetError

#: File suffixes read as images or masks.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

Image.MAX_IMAGE_PIXELS = None  # ROIs of pathology data sets are large but trusted local files


class Split(str, enum.Enum):
    """Part of a data set: ``train``, ``val`` (held out from the training part), ``test``, ``all``."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"
    ALL = "all"


LabelFn = Callable[[np.ndarray, Path], np.ndarray]


@dataclass(frozen=True)
class PatchRef:
    """One patch: ``patch_size`` target pixels from ``(x_t, y_t)`` of the source pair resized by ``scale``."""

    sample_id: str
    image_path: Path
    mask_path: Path
    x_t: int
    y_t: int
    scale: float
    group: str  # the source file (ROI/image) the patch comes from; splits never separate a group


#: Reads the whole mask of a patch's source file, already at the target resolution (``scale`` applied).
MaskReader = Callable[[PatchRef], np.ndarray]


def patch_starts(length: int, patch: int) -> list[int]:
    """Start offsets of ``ceil(length / patch)`` patches covering ``length`` with the overlap spread evenly.

    A side shorter than ``patch`` gives one patch at 0 (padded when read).
    """
    if length <= patch:
        return [0]
    n = math.ceil(length / patch)
    return [round(i * (length - patch) / (n - 1)) for i in range(n)]


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header."""
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def resized_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


#: Decoded (and resized) files are kept up to this many bytes per process, least recently used first out.
DECODED_CACHE_BYTES = 512 * 2**20
_decoded: OrderedDict[tuple[Path, int, float, bool], np.ndarray] = OrderedDict()


def read_resized(path: Path, scale: float, is_mask: bool) -> np.ndarray:
    """The file decoded and resized by ``scale``, via a byte-bounded LRU (small data sets stay in memory)."""
    return cached_decode(path, scale, is_mask, lambda: _decode_resized(path, scale, is_mask))


def cached_decode(path: Path, scale: float, is_mask: bool, decode: Callable[[], np.ndarray]) -> np.ndarray:
    """``decode()`` of ``path`` at ``scale``, kept in the byte-bounded LRU of decoded files (keyed by the
    file's modification time, so an edited file is decoded again)."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    key = (path, mtime, scale, is_mask)
    if key in _decoded:
        _decoded.move_to_end(key)
        return _decoded[key]
    arr = decode()
    _decoded[key] = arr
    total = sum(a.nbytes for a in _decoded.values())
    while total > DECODED_CACHE_BYTES and len(_decoded) > 2:
        _, old = _decoded.popitem(last=False)
        total -= old.nbytes
    return arr


def _decode_resized(path: Path, scale: float, is_mask: bool) -> np.ndarray:
    try:
        with Image.open(path) as opened:
            im: Image.Image = opened
            if is_mask:
                if im.mode not in ("L", "P", "I", "I;16", "1"):
                    im = im.convert("L")
                if im.mode == "1":
                    im = im.convert("L")
            else:
                im = im.convert("RGB")
            if scale != 1.0:
                size = resized_size(im.size[0], im.size[1], scale)
                resample = Image.Resampling.NEAREST if is_mask else Image.Resampling.LANCZOS
                im = im.resize(size, resample=resample)
            arr = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {'mask' if is_mask else 'image'} {path}: {exc}") from exc
    if is_mask and arr.ndim == 3:
        arr = arr[..., 0]
    return arr


def lut_label_fn(lut: np.ndarray, known: np.ndarray | None = None) -> LabelFn:
    """A label function mapping raw mask values (0..255) through a 256-entry uint8 look-up table.

    With ``known`` (256 bools), a mask holding a value the class map does not name raises
    :class:`DatasetError` instead of being silently ignored.
    """

    def apply(raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.size and (int(raw.min()) < 0 or int(raw.max()) > 255):
            raise DatasetError(f"mask {path} has values outside 0..255; expected 8-bit class codes")
        raw = raw.astype(np.uint8, copy=False)
        if known is not None:
            unknown = [int(v) for v in np.unique(raw) if not known[int(v)]]
            if unknown:
                raise DatasetError(f"mask {path} holds values {unknown[:8]} that the class map does not name")
        out: np.ndarray = lut[raw]
        return out

    return apply


class PatchDataset(Sequence[tuple[np.ndarray, np.ndarray]]):
    """A lazy sequence of ``(image uint8 (P,P,3), label uint8 (P,P))`` patches; see the module docstring."""

    def __init__(self, name: str, patches: Sequence[PatchRef], classes: ClassList, patch_size: int,
                 label_fn: LabelFn, mpp: float | None, mask_reader: MaskReader | None = None,
                 instance_fn: LabelFn | None = None) -> None:
        self.name = name
        self.patches = list(patches)
        self.classes = classes
        self.patch_size = patch_size
        self.mpp = mpp  # target resolution in um/px (None: the files' own resolution)
        self._label_fn = label_fn
        self._mask_reader = mask_reader
        self._instance_fn = instance_fn  # raw mask -> instance ids, for masks that hold them (CRAG)

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        ref = self.patches[index]
        image = read_resized(ref.image_path, ref.scale, False)
        raw = self._read_mask(ref)
        if raw.shape[:2] != image.shape[:2]:
            raise DatasetError(
                f"image {ref.image_path.name} is {image.shape[1]}x{image.shape[0]} but its mask "
                f"{ref.mask_path.name} is {raw.shape[1]}x{raw.shape[0]}"
            )
        p = self.patch_size
        img = np.full((p, p, 3), 255, dtype=np.uint8)
        crop_i = image[ref.y_t:ref.y_t + p, ref.x_t:ref.x_t + p]
        img[:crop_i.shape[0], :crop_i.shape[1]] = crop_i
        return img, self._crop_label(ref, raw)

    def label(self, index: int) -> np.ndarray:
        """The label ``(P, P)`` of patch ``index`` alone (reads only the mask file)."""
        ref = self.patches[index]
        return self._crop_label(ref, self._read_mask(ref))

    @property
    def has_instance_ids(self) -> bool:
        """True when the masks hold instance ids (CRAG), so that :meth:`instances` gives them."""
        return self._instance_fn is not None

    def instances(self, index: int) -> np.ndarray | None:
        """Instance ids ``(P, P)`` int32 of patch ``index`` (0 = no instance; padding is 0), read from the
        source mask, or None for data sets whose masks hold no instance ids (:attr:`has_instance_ids`)."""
        if self._instance_fn is None:
            return None
        ref = self.patches[index]
        p = self.patch_size
        ids = np.zeros((p, p), dtype=np.int32)
        crop = self._read_mask(ref)[ref.y_t:ref.y_t + p, ref.x_t:ref.x_t + p]
        ids[:crop.shape[0], :crop.shape[1]] = self._instance_fn(np.ascontiguousarray(crop), ref.mask_path)
        return ids

    def _read_mask(self, ref: PatchRef) -> np.ndarray:
        """The whole mask of ``ref``'s source at the target resolution (the data set's reader, if any)."""
        if self._mask_reader is not None:
            return self._mask_reader(ref)
        return read_resized(ref.mask_path, ref.scale, True)

    def _crop_label(self, ref: PatchRef, raw: np.ndarray) -> np.ndarray:
        p = self.patch_size
        lab = np.full((p, p), self.classes.ignore_index, dtype=np.uint8)
        crop_m = raw[ref.y_t:ref.y_t + p, ref.x_t:ref.x_t + p]
        lab[:crop_m.shape[0], :crop_m.shape[1]] = self._label_fn(np.ascontiguousarray(crop_m), ref.mask_path)
        return lab

    def sample_id(self, index: int) -> str:
        return self.patches[index].sample_id

    @property
    def groups(self) -> list[str]:
        """The distinct source files (ROIs/images) in this data set, sorted."""
        return sorted({p.group for p in self.patches})


def cut_patches(pairs: Sequence[tuple[str, Path, Path, float]], patch_size: int) -> list[PatchRef]:
    """Patches covering every ``(group, image_path, mask_path, scale)`` pair, overlap spread evenly."""
    out: list[PatchRef] = []
    for group, image_path, mask_path, scale in pairs:
        w, h = resized_size(*image_size(image_path), scale)
        for y_t in patch_starts(h, patch_size):
            for x_t in patch_starts(w, patch_size):
                sample_id = f"{group}_x{x_t}_y{y_t}_p{patch_size}_s{scale:.6g}"
                out.append(PatchRef(sample_id, image_path, mask_path, x_t, y_t, scale, group))
    return out


def split_groups(groups: Sequence[str], split: Split, val_fraction: float, seed: int) -> set[str]:
    """Groups of ``split`` (``train`` or ``val``) when ``val_fraction`` of ``groups`` is held out (seeded)."""
    ordered = sorted(set(groups))
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(len(ordered) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(ordered) >= 2:
        n_val = 1
    perm = np.random.default_rng(seed).permutation(len(ordered))
    val = {ordered[i] for i in perm[:n_val]}
    if split is Split.VAL:
        return val
    return set(ordered) - val


def pair_files(image_dir: Path, mask_dir: Path) -> list[tuple[str, Path, Path]]:
    """``(stem, image, mask)`` for every image in ``image_dir``, its mask the same stem in ``mask_dir``."""
    if not image_dir.is_dir():
        raise DatasetError(f"image folder {image_dir} not found")
    if not mask_dir.is_dir():
        raise DatasetError(f"mask folder {mask_dir} not found")
    masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    pairs = []
    missing = []
    for img in sorted(image_dir.iterdir()):
        if img.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if img.stem in masks:
            pairs.append((img.stem, img, masks[img.stem]))
        else:
            missing.append(img.name)
    if missing:
        raise DatasetError(f"{len(missing)} image(s) in {image_dir} have no mask in {mask_dir}, "
                           f"e.g. {missing[0]}")
    if not pairs:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {image_dir}")
    return pairs
