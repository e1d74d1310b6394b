"""Models trained with the SAM-Path reference code (PyTorch Lightning checkpoints) import exactly."""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

from wsiseg.classes import ClassList
from wsiseg.errors import CheckpointError, ClassMismatchError
from wsiseg.model import ModelConfig, ModelLayout, SamPath, Variant
from wsiseg.model.reference_import import read_reference_checkpoint

CLASSES = ClassList.from_names(["tumor", "stroma", "other"])  # k = 3: 4 channels, 5 mask tokens


@pytest.fixture
def box_module() -> Iterator[type]:
    """A stand-in for python-box's ``box.box.Box`` (what Lightning pickles into ``hyper_parameters``)."""
    box = types.ModuleType("box")
    box_box = types.ModuleType("box.box")

    class Box(dict):  # type: ignore[type-arg]
        pass

    Box.__module__, Box.__qualname__ = "box.box", "Box"
    box_box.Box = Box  # type: ignore[attr-defined]
    sys.modules["box"], sys.modules["box.box"] = box, box_box
    yield Box
    del sys.modules["box"], sys.modules["box.box"]


def _reference_state(variant: Variant, channels: int, dino_shapes: Callable[..., dict[str, torch.Size]],
                     seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """A state_dict in the reference's Lightning key layout with random values: segment-anything's own
    tiny image encoder (with its neck), prompt encoder and a decoder of ``channels + 1`` tokens, plus (for
    SAM-Path) a DINO ViT with its 14 x 14 table and the fusion neck."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        enc = ImageEncoderViT(img_size=1024, patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=4,
                              norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True,
                              use_rel_pos=True, global_attn_indexes=(1,), window_size=4, out_chans=256)
        prompt = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                               mask_in_chans=16)
        dec = MaskDecoder(num_multimask_outputs=channels, transformer_dim=256, iou_head_depth=3,
                          iou_head_hidden_dim=256,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                        num_heads=8))
    shapes = {f"model.model.image_encoder.{k}": v.shape for k, v in enc.state_dict().items()}
    shapes |= {f"model.model.prompt_encoder.{k}": v.shape for k, v in prompt.state_dict().items()}
    shapes |= {f"model.model.mask_decoder.{k}": v.shape for k, v in dec.state_dict().items()}
    if variant is Variant.SAM_PATH:
        shapes |= {f"model.extra_encoder.model.{k}": v for k, v in dino_shapes(48, 2).items()}
        neck = {"0.weight": [256, 64 + 48, 1, 1], "1.weight": [256], "1.bias": [256],
                "2.weight": [256, 256, 3, 3], "3.weight": [256], "3.bias": [256]}
        shapes |= {f"model.fusion_neck.{k}": torch.Size(v) for k, v in neck.items()}
    return OrderedDict((k, torch.randn(tuple(s), generator=g) * 0.05) for k, s in sorted(shapes.items()))


def _by_hand(state: dict[str, torch.Tensor], variant: Variant) -> SamPath:
    """The same weights put into a SamPath key by key, the mapping written out independently."""
    model = SamPath(ModelConfig(variant, "sam_tiny", "hipt_tiny" if variant is Variant.SAM_PATH else None, 3,
                                1024, layout=ModelLayout.REFERENCE))
    own = model.state_dict()
    for key in own:
        part, rest = key.split(".", 1)
        source = {"sam_encoder": "model.model.image_encoder.",
                  "prompt_encoder": "model.model.prompt_encoder.",
                  "mask_decoder": "model.model.mask_decoder.",
                  "pathology_encoder": "model.extra_encoder.model.",
                  "reduction": "model.fusion_neck."}[part]
        if part == "reduction":
            rest = rest[len("layers."):]
        own[key] = state[source + rest]
    model.load_state_dict(own)
    return model.eval()


@pytest.mark.parametrize("variant", [Variant.SAM_PATH, Variant.FINETUNED_SAM])
def test_import_gives_exactly_the_logits_of_the_weights(
        tmp_path: Path, box_module: type, variant: Variant,
        make_dino_shapes: Callable[..., dict[str, torch.Size]]) -> None:
    state = _reference_state(variant, 4, make_dino_shapes)
    ckpt = {"epoch": 31, "global_step": 2304, "pytorch-lightning_version": "2.0.9", "state_dict": state,
            "hyper_parameters": {"cfg": box_module(model={"type": "vit_b"}), "num_classes": 4,
                                 "focal_cof": 0.25, "lr_steps": [1800, 2088]},
            "optimizer_states": [], "lr_schedulers": []}
    path = tmp_path / "epoch=31.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(Exception, match="Unsupported global"):  # why a plain weights-only load cannot do
        torch.load(path, weights_only=True)
    imported = read_reference_checkpoint(path, CLASSES)
    assert imported.variant is variant and imported.epoch == 31 and imported.global_step == 2304
    assert imported.hyper_parameters["cfg"] == "<box.box.Box>"
    assert imported.hyper_parameters["lr_steps"] == [1800, 2088]
    model = imported.model
    assert model.config.layout is ModelLayout.REFERENCE and model.num_channels == 4
    assert (model.reduction is None) == (variant is Variant.FINETUNED_SAM)
    hand = _by_hand(state, variant)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, iou = model(x)
        want_logits, want_iou = hand(x)
    assert logits.shape == (1, 4, 256, 256)
    assert torch.equal(logits, want_logits) and torch.equal(iou, want_iou)


def test_import_errors_name_the_key(tmp_path: Path, box_module: type,
                                    make_dino_shapes: Callable[..., dict[str, torch.Size]]) -> None:
    state = _reference_state(Variant.SAM_PATH, 4, make_dino_shapes)

    def save(s: dict[str, torch.Tensor], name: str = "x.ckpt") -> Path:
        torch.save({"state_dict": s, "hyper_parameters": {"cfg": box_module()}}, tmp_path / name)
        return tmp_path / name

    with pytest.raises(ClassMismatchError, match=r"predicts 3 classes but 2 were given"):
        read_reference_checkpoint(save(state), ClassList.from_names(["a", "b"]))
    partial_state = OrderedDict(state)
    del partial_state["model.fusion_neck.2.weight"]
    with pytest.raises(CheckpointError, match=r"lacks key 'model\.fusion_neck\.2\.weight'"):
        read_reference_checkpoint(save(partial_state), CLASSES)
    extra = OrderedDict(state, **{"model.dense_prompt_decoder.layers.0.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"unexpected key 'model\.dense_prompt_decoder"):
        read_reference_checkpoint(save(extra), CLASSES)
    wrong = OrderedDict(state, **{"model.fusion_neck.1.bias": torch.zeros(5)})
    with pytest.raises(CheckpointError, match=r"'model\.fusion_neck\.1\.bias' has shape \[5\]"):
        read_reference_checkpoint(save(wrong), CLASSES)
    no_hipt = OrderedDict((k, v) for k, v in state.items() if not k.startswith("model.extra_encoder."))
    with pytest.raises(CheckpointError, match="fusion_neck without a HIPT encoder"):
        read_reference_checkpoint(save(no_hipt), CLASSES)
    torch.save(dict(state), tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError, match="not a PyTorch Lightning checkpoint"):
        read_reference_checkpoint(tmp_path / "bare.ckpt", CLASSES)
    (tmp_path / "text.ckpt").write_text("nope")
    with pytest.raises(CheckpointError, match="not a readable SAM-Path reference checkpoint"):
        read_reference_checkpoint(tmp_path / "text.ckpt", CLASSES)


def test_cli_import_then_load_and_predict(tmp_path: Path, box_module: type,
                                          make_dino_shapes: Callable[..., dict[str, torch.Size]],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from wsiseg.cli import main
    from wsiseg.model import load_model, read_checkpoint

    state = _reference_state(Variant.SAM_PATH, 4, make_dino_shapes)
    torch.save({"state_dict": state, "epoch": 5, "hyper_parameters": {"cfg": box_module()}},
               tmp_path / "ref.ckpt")
    out = tmp_path / "ref.wsiseg"
    main(["import-reference", str(tmp_path / "ref.ckpt"), "--classes", "tumor,stroma,other",
          "--out", str(out), "--mpp", "0.5", "--tile-size", "512"])
    assert "imported sam_path (3 classes: tumor, stroma, other; epoch 5)" in capsys.readouterr().out
    data = read_checkpoint(out)
    assert data.base == {} and data.mpp == 0.5 and data.tile_size == 512
    assert data.provenance["imported_from"]["epoch"] == 5
    assert data.config.layout is ModelLayout.REFERENCE
    pred = load_model(out, device="cpu")
    tiles = torch.randint(0, 256, (1, 512, 512, 3), dtype=torch.uint8).numpy()
    probs = pred.predict(tiles, 128)
    hand = _by_hand(state, Variant.SAM_PATH)
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    x = torch.nn.functional.interpolate(x, size=(1024, 1024), mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits, _ = hand(x)
    want = torch.softmax(torch.nn.functional.interpolate(logits[:, 1:], size=(128, 128), mode="bilinear",
                                                         align_corners=False, antialias=True), 1)
    torch.testing.assert_close(torch.from_numpy(probs), want, atol=1e-5, rtol=1e-4)
    with pytest.raises(SystemExit):
        main(["import-reference", str(tmp_path / "ref.ckpt"), "--out", str(out)])
    assert "--dataset bcss|crag or --classes" in capsys.readouterr().err
