"""Fixtures for the model tests: checkpoint files in the exact official key layouts, with random values."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import torch
from segment_anything import build_sam_vit_b
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

torch.set_num_threads(2)


def _randomised(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(tuple(s), generator=g) for k, s in shapes.items()}


def _meta_shapes(module_fn: Callable[[], torch.nn.Module]) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in module_fn().state_dict().items()}


def sam_state_dict(encoder: str = "vit_b", seed: int = 0) -> dict[str, torch.Tensor]:
    """A SAM checkpoint state_dict with segment-anything's own key layout and random values.

    ``vit_b`` is ``build_sam_vit_b()``; ``tiny`` is segment-anything's ``Sam`` assembled with the
    ``sam_tiny`` encoder config (same prompt encoder and decoder as every official file).
    """
    if encoder == "vit_b":
        return _randomised(_meta_shapes(build_sam_vit_b), seed)

    def tiny_sam() -> torch.nn.Module:
        return Sam(
            image_encoder=ImageEncoderViT(img_size=1024, patch_size=16, embed_dim=64, depth=2, num_heads=2,
                                          mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                          qkv_bias=True, use_rel_pos=True, global_attn_indexes=(1,),
                                          window_size=4, out_chans=256),
            prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                         input_image_size=(1024, 1024), mask_in_chans=16),
            mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                     transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                   num_heads=8),
                                     transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        )

    return _randomised(_meta_shapes(tiny_sam), seed)


def dino_vit_shapes(embed: int, depth: int, patch: int = 16, img: int = 224) -> dict[str, torch.Size]:
    """Key layout of DINO's/HIPT's ``VisionTransformer`` (vision_transformer.py), written out by hand."""
    n = (img // patch) ** 2
    s: dict[str, torch.Size] = {
        "cls_token": torch.Size([1, 1, embed]),
        "pos_embed": torch.Size([1, n + 1, embed]),
        "patch_embed.proj.weight": torch.Size([embed, 3, patch, patch]),
        "patch_embed.proj.bias": torch.Size([embed]),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        s.update({
            b + "norm1.weight": torch.Size([embed]), b + "norm1.bias": torch.Size([embed]),
            b + "attn.qkv.weight": torch.Size([3 * embed, embed]),
            b + "attn.qkv.bias": torch.Size([3 * embed]),
            b + "attn.proj.weight": torch.Size([embed, embed]), b + "attn.proj.bias": torch.Size([embed]),
            b + "norm2.weight": torch.Size([embed]), b + "norm2.bias": torch.Size([embed]),
            b + "mlp.fc1.weight": torch.Size([4 * embed, embed]), b + "mlp.fc1.bias": torch.Size([4 * embed]),
            b + "mlp.fc2.weight": torch.Size([embed, 4 * embed]), b + "mlp.fc2.bias": torch.Size([embed]),
        })
    s["norm.weight"] = torch.Size([embed])
    s["norm.bias"] = torch.Size([embed])
    return s


def dino_checkpoint(embed: int, depth: int,
                    seed: int = 0) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """A DINO training checkpoint (HIPT's ``vit256_small_dino.pth`` layout) and its backbone weights."""
    backbone = _randomised(dino_vit_shapes(embed, depth), seed)
    head = _randomised({"mlp.0.weight": torch.Size([64, embed]), "mlp.0.bias": torch.Size([64]),
                        "last_layer.weight_g": torch.Size([96, 1]),
                        "last_layer.weight_v": torch.Size([96, 16])},
                       seed + 1)
    teacher = {"backbone." + k: v for k, v in backbone.items()} | {"head." + k: v for k, v in head.items()}
    student = {"module." + k: v + 1 for k, v in teacher.items()}
    ckpt: dict[str, object] = {
        "student": student,
        "teacher": teacher,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.0005, "params": [0, 1]}]},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536, lr=0.0005),
        "dino_loss": {"center": torch.zeros(1, 96)},
    }
    return ckpt, backbone


@pytest.fixture(scope="module")
def sam_vit_b_file(
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    """``sam_vit_b_01ec64.pth``-layout file (~360 MB, random values), written once per module and
    removed after it (CI's disk holds the whole suite's temporary files)."""
    state = sam_state_dict("vit_b", seed=1)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_01ec64.pth"
    torch.save(state, path)
    yield path, state
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def tiny_base_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Official-layout SAM and HIPT files for the tiny presets, plus a second SAM file with other values."""
    d = tmp_path_factory.mktemp("tinybase")
    files = {"sam": d / "sam_tiny.pth", "sam_other": d / "sam_tiny_other.pth", "hipt": d / "hipt_tiny.pth"}
    torch.save(sam_state_dict("tiny", seed=2), files["sam"])
    torch.save(sam_state_dict("tiny", seed=3), files["sam_other"])
    torch.save(dino_checkpoint(48, 2, seed=4)[0], files["hipt"])
    return files


@pytest.fixture
def make_sam_state() -> Callable[..., dict[str, torch.Tensor]]:
    return sam_state_dict


@pytest.fixture
def make_dino_checkpoint() -> Callable[..., tuple[dict[str, object], dict[str, torch.Tensor]]]:
    return dino_checkpoint


@pytest.fixture
def make_dino_shapes() -> Callable[..., dict[str, torch.Size]]:
    return dino_vit_shapes
