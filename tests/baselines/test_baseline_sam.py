"""Vanilla-SAM baselines end to end: oracle Dice 1.0 through SAM-Path's evaluation, the tiny SAM pipeline,
post-processing in the pipeline, per-image timing, segment-everything's labelling, checkpoint errors."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from wsiseg.baselines.evaluate import evaluate_sam_everything, evaluate_sam_points, format_baseline
from wsiseg.baselines.instances import ground_truth_instances
from wsiseg.baselines.sam import SamEverythingSegmenter, SamPointSegmenter, load_vanilla_sam
from wsiseg.baselines.segmenter import MaskGenerator, PointPromptSegmenter
from wsiseg.errors import CheckpointError, ConfigError, DatasetError
from wsiseg.train.datasets import PatchDataset, build_dataset


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


class Oracle:
    """Returns, for each dot, the ground-truth instance it lands in (optionally plus a whole-image mask)."""

    def __init__(self, data: PatchDataset, *, delay: float = 0.0, whole_image_every: int = 0) -> None:
        self.table: dict[str, np.ndarray] = {}
        for i in range(len(data)):
            image, label = data[i]
            self.table[_key(image)] = ground_truth_instances(data, i, label)
        self.delay = delay
        self.whole_image_every = whole_image_every
        self.calls = 0

    def segment(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        inst = self.table[_key(image)]
        out = []
        for x, y in points:
            assert inst[y, x] > 0, "a dot outside every instance"
            self.calls += 1
            if self.whole_image_every and self.calls % self.whole_image_every == 0:
                out.append(np.ones(inst.shape, dtype=bool))  # SAM's failure mode the paper filters out
            else:
                out.append(inst == inst[y, x])
            time.sleep(self.delay)
        return np.stack(out) if out else np.zeros((0, *inst.shape), dtype=bool)

    def generate(self, image: np.ndarray) -> np.ndarray:
        inst = self.table[_key(image)]
        masks = [inst == i for i in np.unique(inst) if i > 0]
        return np.stack([*masks, np.ones(inst.shape, dtype=bool)])

    def provenance(self) -> dict[str, Any]:
        return {"model": "oracle"}


@pytest.mark.parametrize("kind", ["crag", "folder"])
def test_oracle_gives_dice_one_through_the_whole_path(kind: str, crag_like: Path, glas_like: Path,
                                                      tmp_path: Path) -> None:
    data = (build_dataset("crag", crag_like, "all", patch_size=64) if kind == "crag"
            else build_dataset("folder", glas_like, "all", patch_size=64))
    oracle = Oracle(data)
    assert isinstance(oracle, PointPromptSegmenter) and isinstance(oracle, MaskGenerator)
    report = evaluate_sam_points(oracle, data, progress=False, save_predictions=tmp_path / "pred")
    s = report.scores
    assert s.micro_dice == 1.0 and s.micro_iou == 1.0
    assert s.dice == (1.0, 1.0) and s.iou == (1.0, 1.0)
    assert s.confusion[0][1] == 0 and s.confusion[1][0] == 0 and s.confusion[1][1] > 0
    assert report.extra["instances"]["mean_instance_iou"] == 1.0
    assert len(list((tmp_path / "pred").rglob("*.png"))) == len(data)  # CRAG ids hold "train/", "test/"
    d = report.to_dict()
    assert d["method"]["name"] == "sam-points" and d["method"]["class_metrics_apply"] is True
    assert d["micro_dice"] == 1.0 and d["model"]["model"] == "oracle"


def test_post_processing_in_the_pipeline_drops_whole_image_masks(crag_like: Path) -> None:
    data = build_dataset("crag", crag_like, "test", patch_size=64)
    plain = evaluate_sam_points(Oracle(data, whole_image_every=3), data, progress=False)
    post = evaluate_sam_points(Oracle(data, whole_image_every=3), data, post_process=True, progress=False)
    assert plain.scores.micro_dice < 1.0  # the whole-image masks flood the background
    dropped = post.extra["instances"]["dropped_masks"]
    assert dropped == plain.extra["instances"]["total"] // 3 > 0
    assert plain.extra["instances"]["dropped_masks"] == 0
    assert post.scores.confusion[0][1] == 0  # nothing but the glands' own masks is left
    assert post.extra["method"]["post_process"] is True and "more than 0.5" in post.extra["method"][
        "post_process_rule"]
    assert "post-processing" in post.extra["method"]["label"]


def test_timings_are_reported_per_image(crag_like: Path, tmp_path: Path) -> None:
    data = build_dataset("crag", crag_like, "test", patch_size=128)  # one patch per image
    report = evaluate_sam_points(Oracle(data, delay=0.01), data, progress=False)
    per_image = report.extra["per_image"]
    assert [p["sample_id"] for p in per_image] == [data.sample_id(i) for i in range(len(data))]
    for p in per_image:
        assert p["instances"] == 4 and p["seconds"] >= 0.04
    assert report.seconds_per_image == pytest.approx(np.mean([p["seconds"] for p in per_image]))
    report.write_json(tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["seconds_per_image"] >= 0.04 and len(saved["per_image"]) == len(data)
    assert "embedding" in saved["method"]["timing"]


@pytest.mark.parametrize("kind", ["crag", "folder"])
def test_tiny_vanilla_sam_runs_the_real_pipeline(kind: str, crag_like: Path, glas_like: Path) -> None:
    data = (build_dataset("crag", crag_like, "test", patch_size=64) if kind == "crag"
            else build_dataset("folder", glas_like, "all", patch_size=64))  # with an image without glands
    sam, provenance = load_vanilla_sam("tiny", device="cpu")
    segmenter = SamPointSegmenter(sam, provenance)
    image, _ = data[0]
    masks = segmenter.segment(image, np.array([[5, 5], [40, 30]]))
    assert masks.shape == (2, 64, 64) and masks.dtype == bool
    report = evaluate_sam_points(segmenter, data, post_process=True, progress=False)
    assert report.images == len(data) and 0.0 <= report.scores.micro_dice <= 1.0
    assert report.scores.pixels == sum(int((data[i][1] != 255).sum()) for i in range(len(data)))
    assert report.seconds_per_image > 0
    assert report.model["model"] == "vanilla SAM tiny" and "highest predicted IoU" in report.model["prompts"]
    assert report.extra["instances"]["total"] == sum(
        len(set(np.unique(ground_truth_instances(data, i, data[i][1])).tolist()) - {0})
        for i in range(len(data)))
    assert any(p["instances"] == 0 for p in report.extra["per_image"]) == (kind == "folder")
    text = format_baseline(report)
    assert "SAM, one dot per instance + post-processing" in text and "micro (paper)" in text


def test_segment_everything_is_labelled_as_no_class_prediction(crag_like: Path, tmp_path: Path) -> None:
    data = build_dataset("crag", crag_like, "test", patch_size=128)
    plain = evaluate_sam_everything(Oracle(data), data, progress=False)
    post = evaluate_sam_everything(Oracle(data), data, post_process=True, progress=False)
    assert post.scores.micro_dice == 1.0 and plain.scores.micro_dice < 1.0
    assert post.extra["instances"]["mean_best_iou"] == 1.0
    assert post.extra["instances"]["masks_per_image"] == 4.0 and post.extra["instances"]["dropped_masks"] == 2
    d = post.to_dict()
    assert d["method"]["class_metrics_apply"] is False
    assert "NOT a class prediction" in d["method"]["scores_are"] and "not class metrics" in d["warning"]
    sam, provenance = load_vanilla_sam("tiny", device="cpu")
    real = evaluate_sam_everything(SamEverythingSegmenter(sam, provenance, points_per_side=4), data,
                                   progress=False)
    assert real.images == 2 and real.model["generator"]["points_per_side"] == 4
    assert all(p["seconds"] > 0 for p in real.extra["per_image"])


def test_multi_class_data_sets_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "masks" / "a.png")
    (tmp_path / "classes.yaml").write_text("classes:\n  - {name: a, value: 0}\n  - {name: b, value: 1}\n"
                                           "  - {name: c, value: 2}\n")
    data = build_dataset("folder", tmp_path, "all", patch_size=32)
    with pytest.raises(DatasetError, match=r"two classes .* cannot assign classes"):
        evaluate_sam_points(Oracle(data), data, progress=False)
    with pytest.raises(DatasetError, match="sam-everything needs"):
        evaluate_sam_everything(Oracle(data), data, progress=False)


def test_checkpoints_load_safely_and_fail_in_one_line(tmp_path: Path) -> None:
    sam, _ = load_vanilla_sam("tiny", device="cpu")
    good = tmp_path / "tiny_sam.pth"
    torch.save(sam.state_dict(), good)
    loaded, provenance = load_vanilla_sam(None, good, device="cpu")  # recognised by its encoder width
    assert provenance["sam_model"] == "tiny" and len(provenance["weights"]["sha256"]) == 64
    for a, b in zip(loaded.state_dict().values(), sam.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_vanilla_sam("vit_b", truncated, device="cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_vanilla_sam("vit_b", tmp_path / "missing.pth", device="cpu")
    with pytest.raises(ConfigError, match=r"sam_vit_b_01ec64\.pth"):
        load_vanilla_sam("vit_b", None, device="cpu")
    state = sam.state_dict()
    state.pop("mask_decoder.iou_token.weight")
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(CheckpointError, match=r"lacks key 'mask_decoder\.iou_token\.weight'"):
        load_vanilla_sam("tiny", partial, device="cpu")
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(3)}, partial)
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        load_vanilla_sam(None, partial, device="cpu")


def test_a_tiny_checkpoint_is_not_taken_for_vit_b(tmp_path: Path) -> None:
    sam, _ = load_vanilla_sam("tiny", device="cpu")
    path = tmp_path / "tiny_sam.pth"
    torch.save(sam.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"is it sam_vit_b_01ec64\.pth\?"):
        load_vanilla_sam("vit_b", path, device="cpu")
