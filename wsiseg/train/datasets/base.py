"""The common machinery of all data sets: a lazy list of patches cut from image/mask file pairs.

A data set is a sequence of ``(image, label)`` pairs: ``image`` uint8 ``(P, P, 3)`` RGB and ``label`` uint8
``(P, P)`` class indices of :attr:`PatchDataset.classes`, with :attr:`ClassList.ignore_index` for unlabelled
pixels. ``P`` (``patch_size``) is in pixels at the data set's target resolution. Files are decoded only when
a patch is read (the last few decoded files are kept), so building a data set reads only file headers.

Whole-image data sets (``whole_image=True``, CRAG as the reference ran it) have one sample per file: the
file resized to ``P x P`` (bilinear image, nearest label); :meth:`PatchDataset.source` gives the file as it
is, for augmentations that crop before resizing.

Splits: by default a seeded share of the files is held out for validation (:func:`split_groups`); a split
file (:func:`read_split_file`, the reference code's ``img_id,fold`` CSVs) assigns samples instead.
"""

from __future__ import annotations

import csv
import enum
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsiseg.classes import ClassList
from wsiseg.errors import DatasetError

#: File suffixes read as images or masks.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

#: Pixels a data-set image may hold. Pathology ROIs are larger than Pillow's decompression-bomb guard allows
#: (89 M pixels; BCSS ROIs reach ~200 M), so data-set files are opened with this limit instead, under a lock
#: and only for that call (:func:`open_dataset_image`); the guard stays on for everything else.
DATASET_MAX_PIXELS = 1_500_000_000
_PIXEL_LIMIT_LOCK = threading.Lock()


@contextmanager
def open_dataset_image(path: Path) -> Iterator[Image.Image]:
    """``Image.open(path)`` with :data:`DATASET_MAX_PIXELS` as the decompression-bomb limit; a larger image is
    a one-line :class:`DatasetError`."""
    with _PIXEL_LIMIT_LOCK:  # Pillow reads the limit from its module while opening: set it for this call only
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = DATASET_MAX_PIXELS
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(path)
        except Image.DecompressionBombError:
            raise DatasetError(f"{path} has more than {DATASET_MAX_PIXELS:,} pixels; cut it into smaller "
                               "images") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    with image:
        if image.size[0] * image.size[1] > DATASET_MAX_PIXELS:
            raise DatasetError(f"{path} has {image.size[0] * image.size[1]:,} pixels, more than "
                               f"{DATASET_MAX_PIXELS:,}; cut it into smaller images")
        yield image


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
        with open_dataset_image(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def resized_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


#: Decoded (and resized) files are kept up to this many bytes per process, least recently used first out.
DECODED_CACHE_BYTES = 512 * 2**20
_decoded: OrderedDict[tuple[Path, int, float, bool], np.ndarray] = OrderedDict()
_decoded_lock = threading.Lock()  # data loader threads share the cache


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
    with _decoded_lock:
        if key in _decoded:
            _decoded.move_to_end(key)
            return _decoded[key]
    arr = decode()  # outside the lock: threads decode different files at once (the same one, at worst twice)
    with _decoded_lock:
        _decoded[key] = arr
        total = sum(a.nbytes for a in _decoded.values())
        while total > DECODED_CACHE_BYTES and len(_decoded) > 2:
            _, old = _decoded.popitem(last=False)
            total -= old.nbytes
    return arr


def _decode_resized(path: Path, scale: float, is_mask: bool) -> np.ndarray:
    try:
        with open_dataset_image(path) as opened:
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
                 label_fn: LabelFn, mpp: float | None, mask_reader: MaskReader | None = None, *,
                 whole_image: bool = False, instance_fn: LabelFn | None = None) -> None:
        self.name = name
        self.patches = list(patches)
        self.classes = classes
        self.patch_size = patch_size
        self.mpp = mpp  # target resolution in um/px (None: the files' own resolution)
        self.whole_image = whole_image
        self._label_fn = label_fn
        self._mask_reader = mask_reader
        self._instance_fn = instance_fn  # raw mask -> instance ids, for masks that hold them (CRAG)

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        if self.whole_image:
            image, label = self.source(index)
            return _resize_pair(image, label, self.patch_size)
        ref = self.patches[index]
        image, raw = self._decoded(ref)
        p = self.patch_size
        img = np.full((p, p, 3), 255, dtype=np.uint8)
        crop_i = image[ref.y_t:ref.y_t + p, ref.x_t:ref.x_t + p]
        img[:crop_i.shape[0], :crop_i.shape[1]] = crop_i
        return img, self._crop_label(ref, raw)

    def source(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole source of sample ``index`` at the target resolution: image ``(H, W, 3)`` and labels
        ``(H, W)`` (for a whole-image data set: the file before it is resized to ``P x P``)."""
        ref = self.patches[index]
        image, raw = self._decoded(ref)
        return image, self._label_fn(np.ascontiguousarray(raw), ref.mask_path)

    def _decoded(self, ref: PatchRef) -> tuple[np.ndarray, np.ndarray]:
        image = read_resized(ref.image_path, ref.scale, False)
        raw = self._read_mask(ref)
        if raw.shape[:2] != image.shape[:2]:
            raise DatasetError(
                f"image {ref.image_path.name} is {image.shape[1]}x{image.shape[0]} but its mask "
                f"{ref.mask_path.name} is {raw.shape[1]}x{raw.shape[0]}"
            )
        return image, raw

    def label(self, index: int) -> np.ndarray:
        """The label ``(P, P)`` of patch ``index`` alone (reads only the mask file)."""
        ref = self.patches[index]
        if self.whole_image:
            raw = self._label_fn(np.ascontiguousarray(self._read_mask(ref)), ref.mask_path)
            return _resize_label(raw, self.patch_size)
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
        if self.whole_image:
            raw = self._instance_fn(np.ascontiguousarray(self._read_mask(ref)), ref.mask_path)
            return _resize_label(raw, p).astype(np.int32)
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

    def files(self) -> list[list[int]]:
        """The indices of the patches cut from each source file, files in order of first appearance."""
        by_file: dict[Path, list[int]] = {}
        for i, ref in enumerate(self.patches):
            by_file.setdefault(ref.image_path, []).append(i)
        return list(by_file.values())

    @property
    def groups(self) -> list[str]:
        """The distinct source files (ROIs/images) in this data set, in the order of :meth:`files`."""
        return list(dict.fromkeys(p.group for p in self.patches))


def _resize_label(label: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of ``label (H, W)`` to ``size x size`` (source pixel ``floor(i * H / size)``,
    OpenCV's INTER_NEAREST and torch's ``nearest``)."""
    h, w = label.shape[:2]
    rows = np.minimum((np.arange(size) * (h / size)).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(size) * (w / size)).astype(np.int64), w - 1)
    return np.ascontiguousarray(label[rows][:, cols])


def _resize_pair(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``image (H, W, 3)`` uint8 bilinear (half-pixel centres, no antialias, rounded) and ``label``
    nearest to ``size x size``: the reference's test-time ``Resize``."""
    if image.shape[:2] == (size, size):
        return image, label
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    out = x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return np.ascontiguousarray(out), _resize_label(label, size)


#: ``sample_id(group, x_t, y_t, patch_size, scale)`` of a patch
SampleIdFn = Callable[[str, int, int, int, float], str]


def default_sample_id(group: str, x_t: int, y_t: int, patch_size: int, scale: float) -> str:
    return f"{group}_x{x_t}_y{y_t}_p{patch_size}_s{scale:.6g}"


def cut_patches(pairs: Sequence[tuple[str, Path, Path, float]], patch_size: int,
                sample_id: SampleIdFn = default_sample_id) -> list[PatchRef]:
    """Patches covering every ``(group, image_path, mask_path, scale)`` pair, overlap spread evenly."""
    out: list[PatchRef] = []
    for group, image_path, mask_path, scale in pairs:
        w, h = resized_size(*image_size(image_path), scale)
        for y_t in patch_starts(h, patch_size):
            for x_t in patch_starts(w, patch_size):
                out.append(PatchRef(sample_id(group, x_t, y_t, patch_size, scale), image_path, mask_path, x_t,
                                    y_t, scale, group))
    return out


def whole_images(pairs: Sequence[tuple[str, Path, Path, float]]) -> list[PatchRef]:
    """One sample per ``(group, image_path, mask_path, scale)`` pair (its id: the group)."""
    return [PatchRef(group, image_path, mask_path, 0, 0, scale, group)
            for group, image_path, mask_path, scale in pairs]


#: The folds of a split file (REFERENCE section 9): -1 test, 0 validation, 1.. training.
TEST_FOLD, VAL_FOLD = -1, 0


def read_split_file(path: Path | str) -> dict[str, int]:
    """An ``img_id,fold`` CSV (the reference code's ``dataset_cfg/*_cv.csv``) as ``{id: fold}``."""
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DatasetError(f"cannot read split file {path}: {exc.strerror or exc}") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DatasetError(f"split file {path} is not a CSV: {exc}") from exc
    if not rows or not {"img_id", "fold"} <= set(rows[0]):
        raise DatasetError(f"split file {path} needs the columns img_id,fold")
    folds: dict[str, int] = {}
    for n, row in enumerate(rows, start=2):
        try:
            folds[row["img_id"].strip()] = int(row["fold"])
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"split file {path}, line {n}: fold {row.get('fold')!r} is not an integer") \
                from exc
    return folds


def in_split(fold: int, split: Split) -> bool:
    """Whether a sample of ``fold`` belongs to ``split`` (test -1, val 0, train >= 1, all)."""
    return (split is Split.ALL or (split is Split.TEST and fold == TEST_FOLD)
            or (split is Split.VAL and fold == VAL_FOLD) or (split is Split.TRAIN and fold > VAL_FOLD))


def select_by_split_file(patches: Sequence[PatchRef], split: Split, path: Path | str,
                         key: Callable[[PatchRef], str]) -> list[PatchRef]:
    """The patches of ``split`` by their fold in split file ``path`` (``key`` gives a patch's id there).

    Every patch must be listed and every listed id must name a patch: a mismatch means the data differ
    from the ones the file was made for, and raises DatasetError saying how many and which.
    """
    folds = read_split_file(path)
    ids = [key(p) for p in patches]
    missing = [i for i in ids if i not in folds]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(ids)} samples are not in split file {path}, "
                           f"e.g. {missing[0]!r}")
    unknown = sorted(set(folds) - set(ids))
    if unknown:
        raise DatasetError(f"{len(unknown)} ids of split file {path} match no sample of the data set, "
                           f"e.g. {unknown[0]!r} (different data or another patch grid?)")
    return [p for p, i in zip(patches, ids, strict=True) if in_split(folds[i], split)]


def finish_dataset(name: str, patches: Sequence[PatchRef], split: Split, source: Path, classes: ClassList,
                   patch_size: int, label_fn: LabelFn, mpp: float | None, *,
                   mask_reader: MaskReader | None = None, whole_image: bool = False,
                   instance_fn: LabelFn | None = None) -> PatchDataset:
    """The common tail of the data-set builders: refuse an empty split, else build the data set."""
    if not patches:
        raise DatasetError(f"the {name} {split.value} split in {source} is empty")
    return PatchDataset(name, patches, classes, patch_size, label_fn, mpp, mask_reader,
                        whole_image=whole_image, instance_fn=instance_fn)


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
