"""GeoJSON ground truth (QuPath annotations) in a folder data set scores exactly like the PNG masks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio.features
import torch
from PIL import Image

from wsiseg.classes import ClassList
from wsiseg.cli import main
from wsiseg.errors import ClassMismatchError, DatasetError
from wsiseg.model import ModelConfig, SamPath, save_checkpoint
from wsiseg.train.datasets import build_dataset

CLASS_MAP = ("classes:\n  - {name: background, value: 0}\n  - {name: Gland, value: 255}\n"
             "  - {name: Necrosis, value: 40}\nignore: [128]\n")
NAMES = {0: "background", 255: "Gland", 40: "Necrosis"}


def _label_maps(rng: np.random.Generator) -> list[np.ndarray]:
    """Three raw masks (values 0/255/40, 128 = unannotated) with discs, a ring with a hole and a strip."""
    maps = []
    for h, w in ((48, 70), (64, 64), (40, 90)):
        yy, xx = np.mgrid[:h, :w]
        raw = np.zeros((h, w), np.uint8)
        for _ in range(3):
            cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(5, 16)
            d2 = (xx - cx) ** 2 + (yy - cy) ** 2
            raw[d2 < r * r] = 255
            raw[d2 < (r // 3) ** 2] = 0  # a hole (lumen)
        raw[:, : w // 6] = 40
        raw[h - 6:, :] = 128  # unannotated band
        raw[rng.random((h, w)) < 0.01] = 128
        maps.append(raw)
    return maps


def _to_geojson(raw: np.ndarray) -> dict[str, object]:
    """A QuPath-style FeatureCollection: one classified polygon per connected region, pixel coordinates."""
    features = []
    for geom, value in rasterio.features.shapes(raw, mask=raw != 128, connectivity=4):
        features.append({"type": "Feature", "geometry": geom,
                         "properties": {"objectType": "annotation",
                                        "classification": {"name": NAMES[int(value)], "color": [1, 2, 3]}}})
    return {"type": "FeatureCollection", "features": features}


@pytest.fixture()
def png_and_geojson(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    png_root, geo_root = tmp_path / "png", tmp_path / "geo"
    for root in (png_root, geo_root):
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        (root / "classes.yaml").write_text(CLASS_MAP)
    for i, raw in enumerate(_label_maps(rng)):
        h, w = raw.shape
        img = np.clip(np.where(raw[..., None] == 255, 80, 200) + rng.integers(-30, 30, (h, w, 3)), 0, 255)
        for root in (png_root, geo_root):
            Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray(raw).save(png_root / "masks" / f"im{i}.png")
        text = json.dumps(_to_geojson(raw))
        if i == 0:
            (geo_root / "masks" / f"im{i}.geojson").write_text(text)
        elif i == 1:
            (geo_root / "masks" / f"im{i}.json").write_text(text)
        else:
            with gzip.open(geo_root / "masks" / f"im{i}.geojson.gz", "wt") as fh:
                fh.write(text)
    return png_root, geo_root


def test_geojson_masks_give_the_png_labels(png_and_geojson: tuple[Path, Path]) -> None:
    png_root, geo_root = png_and_geojson
    png = build_dataset("folder", png_root, "all", patch_size=32)
    geo = build_dataset("folder", geo_root, "all", patch_size=32)
    assert len(png) == len(geo) == 3 * 2 + 4 + 2 * 3
    assert geo.classes.names == ["background", "Gland", "Necrosis"]
    for i in range(len(png)):
        p_img, p_lab = png[i]
        g_img, g_lab = geo[i]
        np.testing.assert_array_equal(g_img, p_img)
        np.testing.assert_array_equal(g_lab, p_lab)
        np.testing.assert_array_equal(geo.label(i), p_lab)
    assert any((png[i][1] == 255).any() for i in range(len(png)))  # unannotated pixels are ignored
    assert {int(v) for i in range(len(png)) for v in np.unique(png[i][1])} == {0, 1, 2, 255}


def test_geojson_masks_resized_to_the_target_mpp(png_and_geojson: tuple[Path, Path]) -> None:
    png_root, geo_root = png_and_geojson
    opts = dict(patch_size=32, mpp=1.0, source_mpp=0.5)
    png = build_dataset("folder", png_root, "all", **opts)
    geo = build_dataset("folder", geo_root, "all", **opts)
    assert len(png) == len(geo) == 2 + 1 + 2  # 35x24, 32x32, 45x20 px at 1 um/px
    agree = total = 0
    for i in range(len(png)):
        p, g = png[i][1], geo[i][1]
        keep = (p != 255) & (g != 255)
        agree += int((p[keep] == g[keep]).sum())
        total += int(keep.sum())
    # the polygons are rasterised at 1 um/px (pixel centres), the PNG resized by nearest neighbour:
    # they differ only along region borders
    assert total > 0.8 * sum(int((png[i][1] != 255).sum()) for i in range(len(png)))
    assert agree / total > 0.9


def test_evaluate_scores_geojson_truth_like_png(png_and_geojson: tuple[Path, Path], tmp_path: Path) -> None:
    png_root, geo_root = png_and_geojson
    classes = ClassList.from_names(["background", "Gland", "Necrosis"])
    torch.manual_seed(0)
    model = SamPath(ModelConfig.from_preset("tiny", 3, input_size=32))
    ckpt = save_checkpoint(model, tmp_path / "m.wsiseg", classes=classes, mpp=None, tile_size=32)
    reports = []
    for root in (png_root, geo_root):
        out = tmp_path / f"{root.name}.json"
        main(["evaluate", "--model", str(ckpt), "--dataset", "folder", "--data-dir", str(root),
              "--split", "all", "--device", "cpu", "--json", str(out), "--quiet"])
        reports.append(json.loads(out.read_text()))
    png_rep, geo_rep = reports
    png = build_dataset("folder", png_root, "all", patch_size=32)  # overlapping patches count twice
    labelled = sum(int((png.label(i) != 255).sum()) for i in range(len(png)))
    assert png_rep["labelled_pixels"] == labelled
    for key in ("labelled_pixels", "confusion_matrix", "micro_dice", "micro_iou", "per_class"):
        assert geo_rep[key] == png_rep[key], key


def test_geojson_mask_errors(png_and_geojson: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, geo_root = png_and_geojson
    # a raster and a GeoJSON mask for the same image
    Image.fromarray(np.zeros((48, 70), np.uint8)).save(geo_root / "masks" / "im0.png")
    with pytest.raises(DatasetError, match="both a raster and a GeoJSON mask for im0"):
        build_dataset("folder", geo_root, "all", patch_size=32)
    (geo_root / "masks" / "im0.png").unlink()
    # a classification the class map does not name
    data = json.loads((geo_root / "masks" / "im0.geojson").read_text())
    data["features"][0]["properties"]["classification"]["name"] = "Tumor"
    (geo_root / "masks" / "im0.geojson").write_text(json.dumps(data))
    ds = build_dataset("folder", geo_root, "all", patch_size=32)
    with pytest.raises(ClassMismatchError, match="Tumor"):
        ds[0]
    # an image without any mask
    (geo_root / "masks" / "im0.geojson").unlink()
    with pytest.raises(DatasetError, match="have no mask"):
        build_dataset("folder", geo_root, "all", patch_size=32)
