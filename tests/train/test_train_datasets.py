"""Tiny BCSS, CRAG and folder trees built in tmp load with the right classes, labels and splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsiseg.errors import DatasetError
from wsiseg.train.datasets import build_dataset, patch_starts
from wsiseg.train.datasets.bcss import DEFAULT_GROUPS, site_code

# 4 test-institution ROIs (OL, LL, E2, GM) and 10 training ROIs from other sites
BCSS_TEST = ["TCGA-OL-A5RW-DX1", "TCGA-LL-A5YO-DX1", "TCGA-E2-A1B1-DX1", "TCGA-GM-A2DF-DX1"]
BCSS_TRAIN = [f"TCGA-{site}-A{i:03d}-DX1" for i, site in enumerate(["A1", "A2", "AR", "BH", "C8", "D8",
                                                                   "A7", "AO", "A8", "B6"])]


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _make_bcss(root: Path) -> None:
    rng = np.random.default_rng(0)
    for case in BCSS_TEST + BCSS_TRAIN:
        name = f"{case}_xmin100_ymin200_MPP-0.2500"
        h, w = 40, 60  # cut into 32-px patches at 0.25 um/px: 2 x 2 per ROI
        mask = np.zeros((h, w), np.uint8)
        mask[:, :10] = 1          # tumor
        mask[:, 10:20] = 2        # stroma
        mask[:, 20:30] = 10       # plasma cells -> inflammatory
        mask[:, 30:40] = 4        # necrosis
        mask[:, 40:50] = 9        # fat -> others
        mask[:, 50:55] = 20       # dcis -> tumor
        # columns 55.. stay 0 (outside ROI, ignored)
        _write(root / "masks" / f"{name}.png", mask)
        _write(root / "rgbs_colorNormalized" / f"{name}.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_patch_starts_spread_overlap_evenly() -> None:
    assert patch_starts(1024, 1024) == [0]
    assert patch_starts(500, 1024) == [0]
    assert patch_starts(2500, 1024) == [0, 738, 1476]
    assert patch_starts(60, 32) == [0, 28]


def test_bcss_classes_labels_and_splits(tmp_path: Path) -> None:
    _make_bcss(tmp_path)
    train = build_dataset("bcss", tmp_path, "train", patch_size=32, mpp=0.25, seed=3)
    val = build_dataset("bcss", tmp_path, "val", patch_size=32, mpp=0.25, seed=3)
    test = build_dataset("bcss", tmp_path, "test", patch_size=32, mpp=0.25, seed=3)
    assert train.classes.names == ["tumor", "stroma", "inflammatory", "necrosis", "others"]
    # split by ROI: official test institutions, then 20% of the 10 training ROIs held out
    assert {site_code(g) for g in test.groups} == {"OL", "LL", "E2", "GM"}
    assert len(val.groups) == 2 and len(train.groups) == 8
    assert not set(train.groups) & set(val.groups) and not set(train.groups) & set(test.groups)
    assert set(train.groups) | set(val.groups) == {f"{c}_xmin100_ymin200_MPP-0.2500" for c in BCSS_TRAIN}
    assert len(train) == 8 * 4  # 2 x 2 patches per ROI
    # the split is seeded: same seed same split, other seed (usually) another
    again = build_dataset("bcss", tmp_path, "val", patch_size=32, mpp=0.25, seed=3)
    assert again.groups == val.groups
    # the label of the top-left patch (x 0..31, y 0..31) and the top-right one (x 28..59)
    img, lab = train[0]
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and lab.dtype == np.uint8
    ign = train.classes.ignore_index
    assert (lab[:, :10] == 0).all() and (lab[:, 10:20] == 1).all() and (lab[:, 20:30] == 2).all()
    assert (lab[:, 30:32] == 3).all()
    _, lab_right = train[1]  # starts at x 28
    assert (lab_right[:, 2:12] == 3).all() and (lab_right[:, 12:22] == 4).all()
    assert (lab_right[:, 22:27] == 0).all() and (lab_right[:, 27:] == ign).all()


def test_bcss_resizes_to_target_mpp_and_reads_mapping_file(tmp_path: Path) -> None:
    _make_bcss(tmp_path)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("classes:\n  tumor: [1, 20]\n  rest: [2, 4, 10]\n")
    ds = build_dataset("bcss", tmp_path, "all", patch_size=32, mpp=0.5, mapping=mapping)
    assert ds.classes.names == ["tumor", "rest"]
    assert len(ds) == 14 * 1 * 1  # 40x60 at 0.25 -> 20x30 at 0.5: one padded patch per ROI
    _, lab = ds[0]
    assert (lab[:20, :5] == 0).all() and (lab[:20, 5:20] == 1).all()
    assert (lab[:20, 20:25] == 255).all()  # fat (9) is not in the mapping -> ignored
    assert (lab[:20, 25:27] == 0).all() and (lab[:20, 27:] == 255).all()  # dcis -> tumor; code 0 ignored
    assert (lab[20:, :] == 255).all()  # padding is ignored


def test_bcss_default_grouping_covers_every_labelled_code() -> None:
    codes = sorted(c for group in DEFAULT_GROUPS.values() for c in group)
    assert codes == list(range(1, 22))


def _make_crag(root: Path) -> None:
    rng = np.random.default_rng(1)
    for part, n in (("train", 5), ("test", 2)):
        for i in range(n):
            inst = np.zeros((48, 40), np.uint16)
            inst[5:20, 5:20] = 1
            inst[25:40, 10:30] = 300 + i  # instance ids beyond 255 (16-bit masks)
            _write(root / part / "Annotation" / f"{part}_{i}.png", inst)
            rgb = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
            _write(root / part / "Images" / f"{part}_{i}.png", rgb)


def test_crag_instances_become_gland_and_splits_hold(tmp_path: Path) -> None:
    _make_crag(tmp_path)
    train = build_dataset("crag", tmp_path, "train", patch_size=64)
    val = build_dataset("crag", tmp_path, "val", patch_size=64)
    test = build_dataset("crag", tmp_path, "test", patch_size=64)
    assert train.classes.names == ["background", "gland"]
    assert len(train) == 4 and len(val) == 1 and len(test) == 2
    assert all(g.startswith("test/") for g in test.groups)
    assert not set(train.groups) & set(val.groups)
    img, lab = test[0]
    assert img.shape == (64, 64, 3)
    assert (lab[5:20, 5:20] == 1).all() and (lab[25:40, 10:30] == 1).all()
    assert lab[0, 0] == 0 and (lab[48:, :] == 255).all() and (lab[:, 40:] == 255).all()
    assert int((lab == 1).sum()) == 15 * 15 + 15 * 20


def test_folder_class_map_values_and_errors(tmp_path: Path) -> None:
    for i in range(5):
        m = np.zeros((20, 20), np.uint8)
        m[:10] = 255
        m[15:, :] = 128
        _write(tmp_path / "images" / f"im{i}.png", np.full((20, 20, 3), 100 + i, np.uint8))
        _write(tmp_path / "masks" / f"im{i}.png", m)
    with pytest.raises(DatasetError, match="no class map"):
        build_dataset("folder", tmp_path, "train", patch_size=16)
    (tmp_path / "classes.yaml").write_text(
        "classes:\n  - {name: background, value: 0}\n  - {name: gland, value: 255, color: [200, 0, 0]}\n"
        "ignore: [128]\n")
    ds = build_dataset("folder", tmp_path, "all", patch_size=20)
    assert ds.classes.names == ["background", "gland"] and ds.classes.colors[1] == (200, 0, 0)
    _, lab = ds[0]
    assert (lab[:10] == 1).all() and (lab[10:15] == 0).all() and (lab[15:] == 255).all()
    assert len(build_dataset("folder", tmp_path, "val", patch_size=20)) == 1
    with pytest.raises(DatasetError, match="test/images"):
        build_dataset("folder", tmp_path, "test", patch_size=20)
    # a mask value the class map does not name is an error, not silently a class
    (tmp_path / "classes.yaml").write_text("classes:\n  - {name: background, value: 0}\n"
                                           "  - {name: gland, value: 255}\n")
    bad = build_dataset("folder", tmp_path, "all", patch_size=20)
    with pytest.raises(DatasetError, match=r"values \[128\]"):
        bad[0]


def test_layout_errors_are_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a BCSS folder"):
        build_dataset("bcss", tmp_path, "train")
    with pytest.raises(DatasetError, match="not a CRAG folder"):
        build_dataset("crag", tmp_path, "train")
    with pytest.raises(DatasetError, match="unknown data set"):
        build_dataset("pannuke", tmp_path, "train")
    with pytest.raises(DatasetError, match="unknown split"):
        build_dataset("crag", tmp_path, "holdout")


def test_glas_folder_layout_loads(glas_dir: Path) -> None:
    classes = Path(__file__).resolve().parents[2] / "pipelines" / "glas-classes.yaml"
    ds = build_dataset("folder", glas_dir, "all", patch_size=256, mpp=2.48, source_mpp=0.62,
                       class_map=classes)
    assert ds.classes.names == ["background", "gland"]
    img, lab = ds[0]
    assert img.shape == (256, 256, 3)
    # 775x522 at 0.62 um/px -> 194x130 at 2.48 um/px: one padded patch per image
    assert len(ds) == 20
    assert set(np.unique(lab[:130, :194]).tolist()) == {0, 1} and (lab[130:] == 255).all()


def test_bcss_patch_ids_are_the_reference_codes(tmp_path: Path) -> None:
    """``<ROI name>_<y0>_<x0>``: REFERENCE section 9's example, a 3 x 4-patch ROI of 2467 x 3394 px
    at 1024 px patches, has y0 0/722/1443 and x0 0/790/1580/2370."""
    assert patch_starts(2467, 1024) == [0, 722, 1443]
    assert patch_starts(3394, 1024) == [0, 790, 1580, 2370]
    _make_bcss(tmp_path)
    ds = build_dataset("bcss", tmp_path, "all", patch_size=32, mpp=0.25)
    roi = f"{BCSS_TRAIN[0]}_xmin100_ymin200_MPP-0.2500"
    assert [ds.sample_id(i) for i in range(len(ds)) if ds.patches[i].group == roi] == [
        f"{roi}_0_0", f"{roi}_0_28", f"{roi}_8_0", f"{roi}_8_28"]  # 40 x 60 px: y0 0/8, x0 0/28


def _split_file(path: Path, folds: dict[str, int]) -> Path:
    path.write_text("img_id,fold\n" + "".join(f"{k},{v}\n" for k, v in folds.items()))
    return path


def test_bcss_split_file_assigns_patches_by_fold(tmp_path: Path) -> None:
    _make_bcss(tmp_path)
    every = build_dataset("bcss", tmp_path, "all", patch_size=32, mpp=0.25)
    ids = [every.sample_id(i) for i in range(len(every))]
    folds = {pid: (-1 if n % 7 == 0 else n % 5) for n, pid in enumerate(ids)}  # per patch, as the reference
    csv = _split_file(tmp_path / "BCSS_cv.csv", folds)
    for split, keep in (("test", lambda f: f == -1), ("val", lambda f: f == 0), ("train", lambda f: f >= 1)):
        ds = build_dataset("bcss", tmp_path, split, patch_size=32, mpp=0.25, split_file=csv)
        assert [ds.sample_id(i) for i in range(len(ds))] == [p for p in ids if keep(folds[p])]
    # patches of one ROI now straddle train and val (the reference's folds are per patch)
    train = build_dataset("bcss", tmp_path, "train", patch_size=32, mpp=0.25, split_file=csv)
    val = build_dataset("bcss", tmp_path, "val", patch_size=32, mpp=0.25, split_file=csv)
    assert set(train.groups) & set(val.groups)
    # a file made for other data is refused, naming what does not match
    del folds[ids[3]]
    with pytest.raises(DatasetError, match=r"1 of 56 samples are not in split file .*" + ids[3]):
        build_dataset("bcss", tmp_path, "train", patch_size=32, mpp=0.25,
                      split_file=_split_file(tmp_path / "short.csv", folds))
    folds[ids[3]] = 1
    folds["TCGA-XX-0000-DX1_0_0"] = 2
    with pytest.raises(DatasetError, match=r"1 ids of split file .* match no sample.*TCGA-XX"):
        build_dataset("bcss", tmp_path, "train", patch_size=32, mpp=0.25,
                      split_file=_split_file(tmp_path / "long.csv", folds))
    (tmp_path / "bad.csv").write_text("name;fold\na;1\n")
    with pytest.raises(DatasetError, match="needs the columns img_id,fold"):
        build_dataset("bcss", tmp_path, "train", patch_size=32, mpp=0.25, split_file=tmp_path / "bad.csv")


def test_crag_whole_images_resized_as_the_reference(tmp_path: Path) -> None:
    """CRAG as the paper ran it: one sample per image, the whole 48 x 40 image resized to P x P
    (bilinear image, nearest label); ``source`` keeps the image as it is; folds from a split file."""
    _make_crag(tmp_path)
    csv = _split_file(tmp_path / "CRAG_cv.csv", {"train_0": 0, "train_1": 1, "train_2": 2, "train_3": 3,
                                                 "train_4": 4, "test_0": -1, "test_1": -1})
    train = build_dataset("crag", tmp_path, "train", patch_size=96, whole_image=True, split_file=csv)
    val = build_dataset("crag", tmp_path, "val", patch_size=96, whole_image=True, split_file=csv)
    test = build_dataset("crag", tmp_path, "test", patch_size=96, whole_image=True, split_file=csv)
    assert (len(train), len(val), len(test)) == (4, 1, 2) and val.groups == ["train/train_0"]
    assert train.whole_image and train.mpp == 0.5
    image, label = test[0]
    assert image.shape == (96, 96, 3) and label.shape == (96, 96) and image.dtype == np.uint8
    src_image, src_label = test.source(0)
    assert src_image.shape == (48, 40, 3) and src_label.shape == (48, 40)
    # nearest: output row i takes source row floor(i * 48 / 96), column j source column floor(j * 40 / 96)
    rows, cols = (np.arange(96) * 48) // 96, (np.arange(96) * 40) // 96
    np.testing.assert_array_equal(label, src_label[rows][:, cols])
    np.testing.assert_array_equal(test.label(0), label)
    assert set(np.unique(label)) == {0, 1}
    # bilinear (half-pixel centres), rounded: compare with torch on the same image
    import torch
    import torch.nn.functional as F

    want = F.interpolate(torch.from_numpy(np.array(src_image)).permute(2, 0, 1)[None].float(), size=(96, 96),
                         mode="bilinear", align_corners=False)[0].permute(1, 2, 0).round().numpy()
    np.testing.assert_array_equal(image, want.astype(np.uint8))
    with pytest.raises(DatasetError, match="do not set mpp"):
        build_dataset("crag", tmp_path, "train", patch_size=96, whole_image=True, mpp=0.5)


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that only declares its size (IHDR, no pixel data): enough for Pillow to open it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_pillow_guard_stays_on_and_large_dataset_images_get_a_one_line_error(tmp_path: Path) -> None:
    """Importing the data sets leaves Pillow's decompression-bomb guard as it is; data-set files are opened
    with a larger limit for that call only, and an image beyond it is a one-line DatasetError."""
    from wsiseg.train.datasets import base

    before = Image.MAX_IMAGE_PIXELS
    assert before is not None and before < base.DATASET_MAX_PIXELS
    roi = _png_header(tmp_path / "roi.png", 15_000, 15_000)  # 225 M pixels: above Pillow's own limit
    with pytest.raises(Image.DecompressionBombError):
        Image.open(roi)
    assert base.image_size(roi) == (15_000, 15_000)
    huge = _png_header(tmp_path / "huge.png", 50_000, 40_000)
    with pytest.raises(DatasetError, match="more than 1,500,000,000") as info:
        base.image_size(huge)
    assert "\n" not in str(info.value)
    assert before == Image.MAX_IMAGE_PIXELS
