"""Official checkpoint loading: SAM ``sam_vit_b`` (full size) and HIPT's DINO file, in their exact layouts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import get_rel_pos

from wsiseg.errors import CheckpointError, ConfigError
from wsiseg.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelConfig,
    ModelLayout,
    SamPath,
    Variant,
    load_hipt_weights,
    load_sam_weights,
)
from wsiseg.model.pathology_encoder import dino_position_table

SamFile = tuple[Path, dict[str, torch.Tensor]]


def test_sam_vit_b_every_tensor_equals_its_source(sam_vit_b_file: SamFile) -> None:
    """Fs and the pretrained decoder parts come from the file; the new decoder parts are initialised as
    the reference code does (REFERENCE section 9)."""
    path, src = sam_vit_b_file
    torch.manual_seed(0)
    model = SamPath(ModelConfig(Variant.SAM_PRE_NECK, "sam_vit_b", None, num_classes=5, input_size=1024))
    assert model.reduction is not None
    r_before = model.reduction.layers[0].weight.detach().clone()
    fresh = {k: v.detach().clone() for k, v in model.mask_decoder.state_dict().items()
             if k.startswith(("mask_tokens.", "iou_prediction_head.layers.2."))}
    digest = load_sam_weights(model, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.base_weights["sam"] == {"file": "sam_vit_b_01ec64.pth", "sha256": digest}
    assert model.sam_encoder is not None
    enc = model.sam_encoder.state_dict()
    assert set(enc) == {k[len("image_encoder."):] for k in src
                        if k.startswith("image_encoder.") and ".neck." not in k}
    for key, value in enc.items():
        assert torch.equal(value, src["image_encoder." + key]), key
    prompt = model.prompt_encoder.state_dict()
    assert torch.equal(prompt["pe_layer.positional_encoding_gaussian_matrix"],
                       src["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"])
    assert torch.equal(prompt["no_mask_embed.weight"], src["prompt_encoder.no_mask_embed.weight"])
    dec = model.mask_decoder.state_dict()
    for key, value in dec.items():
        if key in fresh:  # fresh class tokens (N(0, 1)) and IoU output layer, as constructed
            assert torch.equal(value, fresh[key]), key
        elif key.startswith("output_hypernetworks_mlps."):  # every MLP a copy of SAM's MLP 0
            _, _, rest = key.split(".", 2)
            assert torch.equal(value, src[f"mask_decoder.output_hypernetworks_mlps.0.{rest}"]), key
        else:
            assert torch.equal(value, src["mask_decoder." + key]), key
    # 5 classes + the "unlabeled" channel = 6 channels, + the dropped slot = 7 tokens and 7 MLPs
    assert dec["mask_tokens.weight"].shape == (7, 256)
    assert dec["iou_prediction_head.layers.2.weight"].shape == (7, 256)
    assert len(model.mask_decoder.output_hypernetworks_mlps) == 7
    assert 0.8 < float(dec["mask_tokens.weight"].std()) < 1.2  # nn.Embedding's N(0, 1)
    # R replaces the neck and keeps its random initialisation
    assert torch.equal(model.reduction.layers[0].weight, r_before)


def test_finetuned_sam_keeps_sams_pretrained_neck(sam_vit_b_file: SamFile) -> None:
    """"Fine-tuned SAM (w.o. Fp)": SAM's encoder with its own neck (frozen), no R, only the decoder trains."""
    path, src = sam_vit_b_file
    model = SamPath(ModelConfig.from_preset("sam_vit_b_only", 5))
    assert model.config.variant is Variant.FINETUNED_SAM and model.reduction is None
    load_sam_weights(model, path)
    assert model.sam_encoder is not None and model.sam_encoder.has_neck
    enc = model.sam_encoder.state_dict()
    assert {k for k in enc if k.startswith("neck.")} == {k[len("image_encoder."):] for k in src
                                                          if k.startswith("image_encoder.neck.")}
    for key, value in enc.items():
        assert torch.equal(value, src["image_encoder." + key]), key
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"mask_decoder"}
    assert model.feature_channels == 256


def test_sam_vit_b_at_512_resizes_position_tables(sam_vit_b_file: SamFile) -> None:
    path, src = sam_vit_b_file
    model = SamPath(ModelConfig(Variant.SAM_PRE_NECK, "sam_vit_b", None, num_classes=2, input_size=512))
    load_sam_weights(model, path)
    assert model.sam_encoder is not None
    enc = model.sam_encoder.state_dict()
    pos = src["image_encoder.pos_embed"].permute(0, 3, 1, 2)
    expected = F.interpolate(pos, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(enc["pos_embed"], expected.permute(0, 2, 3, 1))
    # global blocks: the 127-row tables become 63 rows and give exactly what segment-anything's get_rel_pos
    # computes on the fly from the original table for a 32x32 grid; windowed blocks (27 rows) are unchanged
    for i in (2, 5, 8, 11):
        key = f"blocks.{i}.attn.rel_pos_h"
        assert enc[key].shape == (63, 64)
        torch.testing.assert_close(get_rel_pos(32, 32, enc[key]),
                                   get_rel_pos(32, 32, src["image_encoder." + key]))
    assert torch.equal(enc["blocks.0.attn.rel_pos_w"], src["image_encoder.blocks.0.attn.rel_pos_w"])
    assert torch.equal(enc["blocks.7.mlp.lin1.weight"], src["image_encoder.blocks.7.mlp.lin1.weight"])


def test_sam_file_of_another_encoder_names_key_and_shape(sam_vit_b_file: SamFile) -> None:
    model = SamPath(ModelConfig.from_preset("tiny_sam_only", 3, input_size=64, variant="sam_pre_neck"))
    with pytest.raises(CheckpointError, match=r"'image_encoder\.pos_embed' has shape \[1, 64, 64, 768\], "
                                              r"expected \[1, 64, 64, 64\] "
                                              r"\(is it the checkpoint of sam_tiny\?\)"):
        load_sam_weights(model, sam_vit_b_file[0])


@pytest.fixture
def decoder_only_state(make_sam_state: Callable[..., dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The prompt-encoder and mask-decoder part of a real SAM layout (enough for a w/o-Fs model)."""
    return {k: v for k, v in make_sam_state("tiny", seed=5).items() if not k.startswith("image_encoder.")}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.pop("mask_decoder.iou_token.weight"), r"lacks key 'mask_decoder\.iou_token\.weight' "
                                                       r"\(expected shape \[1, 256\]\)"),
    (lambda s: s.update({"mask_decoder.extra.weight": torch.zeros(2)}), "unexpected key 'mask_decoder.extra"),
    (lambda s: s.update({"mask_decoder.mask_tokens.weight": torch.zeros(5, 256)}),
     r"'mask_decoder\.mask_tokens\.weight' has shape \[5, 256\], expected \[4, 256\]"),
    (lambda s: s.clear() or s.update({"foo": torch.zeros(1)}), "lacks key 'prompt_encoder"),
])
def test_sam_layout_errors(tmp_path: Path, decoder_only_state: dict[str, torch.Tensor],
                           edit: Callable[[dict[str, torch.Tensor]], object], message: str) -> None:
    model = SamPath(ModelConfig.from_preset("tiny_hipt_only", 3, input_size=64))
    good = tmp_path / "good.pth"
    torch.save(decoder_only_state, good)
    load_sam_weights(model, good)  # image_encoder.* absent is fine without Fs
    assert torch.equal(model.mask_decoder.iou_token.weight,
                       decoder_only_state["mask_decoder.iou_token.weight"])
    edit(decoder_only_state)
    bad = tmp_path / "bad.pth"
    torch.save(decoder_only_state, bad)
    with pytest.raises(CheckpointError, match=message):
        load_sam_weights(model, bad)


def test_unreadable_files(tmp_path: Path, decoder_only_state: dict[str, torch.Tensor]) -> None:
    model = SamPath(ModelConfig.from_preset("tiny_hipt_only", 3, input_size=64))
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a readable Segment Anything checkpoint"):
        load_sam_weights(model, text)
    full = tmp_path / "full.pth"
    torch.save(decoder_only_state, full)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pth is not a readable .*: the file is truncated"):
        load_sam_weights(model, truncated)
    with pytest.raises(CheckpointError, match="not found"):
        load_sam_weights(model, tmp_path / "missing.pth")
    listed = tmp_path / "list.pth"
    torch.save([1, 2, 3], listed)
    with pytest.raises(CheckpointError, match="expected a dict of tensors, got list"):
        load_sam_weights(model, listed)
    pickled = tmp_path / "object.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)
    with pytest.raises(CheckpointError, match="Unsupported global"):
        load_sam_weights(model, pickled)


def test_hipt_dino_checkpoint_loads_every_tensor(
        tmp_path: Path, make_dino_checkpoint: Callable[..., tuple[dict[str, object], dict[str, torch.Tensor]]]
) -> None:
    ckpt, backbone = make_dino_checkpoint(384, 12, seed=7)
    path = tmp_path / "vit256_small_dino.pth"
    torch.save(ckpt, path)
    # every tensor is copied unchanged, the 14x14 position table too (it is interpolated per forward)
    model = SamPath(ModelConfig(Variant.PATHOLOGY_ONLY, None, "hipt_vit_s", num_classes=2, input_size=224))
    digest = load_hipt_weights(model, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.pathology_encoder is not None
    ours = model.pathology_encoder.state_dict()
    assert set(ours) == set(backbone)
    for key, value in ours.items():
        assert torch.equal(value, backbone[key]), key  # teacher weights (the student's differ by +1)
    # and the encoder computes what timm's own vit_small_patch16_224 computes with the same weights on the
    # input re-normalised from ImageNet's mean/std to HIPT's 0.5/0.5
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    ref.load_state_dict(backbone, strict=True)
    x = torch.randn(1, 3, 224, 224)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = ref.forward_features((x * std + mean - 0.5) / 0.5)[:, 1:]
        feats = model.pathology_encoder(x)
    torch.testing.assert_close(feats.flatten(2).transpose(1, 2), tokens)


def test_hipt_input_is_renormalised_to_half_half() -> None:
    """Hand computation: a pixel v (0..255), ImageNet-normalised, reaches HIPT's patch embedding as
    (v / 255 - 0.5) / 0.5: black -1, white +1, mid-grey 128 -> 1/255."""
    model = SamPath(ModelConfig.from_preset("tiny_hipt_only", 2, input_size=32))
    enc = model.pathology_encoder
    assert enc is not None
    seen: list[torch.Tensor] = []
    enc.patch_embed.proj.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    pixels = torch.tensor([0.0, 128.0, 255.0]).view(1, 1, 3, 1).expand(1, 3, 3, 32)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (pixels / 255.0 - mean) / std
    x = torch.nn.functional.pad(x, (0, 0, 0, 29))
    with torch.no_grad():
        enc(x)
    got = seen[0][0, :, :3, 0]
    expected = torch.tensor([-1.0, 1.0 / 255.0, 1.0]).expand(3, 3)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_hipt_position_table_is_interpolated_dino_style_each_forward(
        tmp_path: Path, make_dino_checkpoint: Callable[..., tuple[dict[str, object], dict[str, torch.Tensor]]]
) -> None:
    """REFERENCE section 9: the stored 14x14 table is interpolated on every forward with
    scale_factor (G + 0.1) / 14 (bicubic), which is not the same as resizing it to G once."""
    ckpt, backbone = make_dino_checkpoint(48, 2, seed=8)
    path = tmp_path / "hipt_tiny.pth"
    torch.save(ckpt, path)
    model = SamPath(ModelConfig.from_preset("tiny_hipt_only", 2, input_size=1024))
    load_hipt_weights(model, path)
    assert model.pathology_encoder is not None
    stored = model.pathology_encoder.state_dict()["pos_embed"]
    assert torch.equal(stored, backbone["pos_embed"])  # (1, 197, 48): kept as the file has it
    table = dino_position_table(stored, 64)
    assert table.shape == (1, 1 + 64 * 64, 48)
    assert torch.equal(table[:, 0], stored[:, 0])
    grid = stored[:, 1:].reshape(1, 14, 14, 48).permute(0, 3, 1, 2)
    by_hand = F.interpolate(grid, scale_factor=(64.1 / 14, 64.1 / 14), mode="bicubic", align_corners=False)
    assert torch.equal(table[:, 1:], by_hand.permute(0, 2, 3, 1).reshape(1, 4096, 48))
    once = F.interpolate(grid, size=(64, 64), mode="bicubic", align_corners=False)
    assert not torch.allclose(by_hand, once, atol=1e-4)  # the +0.1 matters
    assert torch.equal(dino_position_table(stored, 14), stored)  # DINO: the table as is on its own grid
    # the forward adds exactly this table to the patch tokens
    seen: list[torch.Tensor] = []
    model.pathology_encoder.blocks.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(1, 3, 1024, 1024)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        model.pathology_encoder(x)
        patches = model.pathology_encoder.patch_embed.proj((x * std + mean - 0.5) / 0.5)
        patches = patches.flatten(2).transpose(1, 2)
    cls = model.pathology_encoder.cls_token
    assert cls is not None
    expected = torch.cat([cls, patches], dim=1) + table
    torch.testing.assert_close(seen[0], expected)


def test_v1_layout_resizes_the_hipt_table_once(
        tmp_path: Path, make_dino_checkpoint: Callable[..., tuple[dict[str, object], dict[str, torch.Tensor]]]
) -> None:
    """Models of wsiseg 0.1 (layout v1) keep their own computation: the table resized once at load."""
    ckpt, backbone = make_dino_checkpoint(48, 2, seed=8)
    path = tmp_path / "hipt_tiny.pth"
    torch.save(ckpt, path)
    model = SamPath(ModelConfig(Variant.PATHOLOGY_ONLY, None, "hipt_tiny", 2, 256, layout=ModelLayout.V1))
    load_hipt_weights(model, path)
    assert model.pathology_encoder is not None
    pos = model.pathology_encoder.state_dict()["pos_embed"]
    assert pos.shape == (1, 1 + 16 * 16, 48)
    src = backbone["pos_embed"]
    assert torch.equal(pos[:, 0], src[:, 0])  # the CLS position is kept
    grid = src[:, 1:].reshape(1, 14, 14, 48).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False)
    torch.testing.assert_close(pos[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 256, 48))


def test_hipt_errors(
        tmp_path: Path, make_dino_checkpoint: Callable[..., tuple[dict[str, object], dict[str, torch.Tensor]]]
) -> None:
    ckpt, _ = make_dino_checkpoint(48, 2)
    model = SamPath(ModelConfig.from_preset("tiny_hipt_only", 2, input_size=64))
    no_teacher = {k: v for k, v in ckpt.items() if k != "teacher"}
    torch.save(no_teacher, tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match="no 'teacher' weights"):
        load_hipt_weights(model, tmp_path / "a.pth")
    teacher = dict(ckpt["teacher"])  # type: ignore[call-overload]
    del teacher["backbone.blocks.1.mlp.fc2.bias"]
    torch.save({**ckpt, "teacher": teacher}, tmp_path / "b.pth")
    with pytest.raises(CheckpointError,
                       match=r"lacks key 'blocks\.1\.mlp\.fc2\.bias' \(expected shape \[48\]\)"):
        load_hipt_weights(model, tmp_path / "b.pth")
    vit_s, _ = make_dino_checkpoint(384, 12)
    torch.save(vit_s, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=r"expected \[48\].*hipt_tiny|expected \[1, 1, 48\]"):
        load_hipt_weights(model, tmp_path / "c.pth")
    sam_only = SamPath(ModelConfig.from_preset("tiny_sam_only", 2, input_size=64))
    with pytest.raises(ConfigError, match="no pathology encoder"):
        load_hipt_weights(sam_only, tmp_path / "c.pth")
