"""Pathology foundation models as Fp: built exactly as their publishers build them with timm, their files
loaded tensor for tensor, their patch tokens equal to timm's own ``forward_features``.

The publishers' calls are written out below a second time, by hand from the model cards (docs/
foundation-encoders.md), so that the spec table in wsiseg is checked against them, not against itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import SwiGLUPacked

from wsiseg.errors import CheckpointError, ConfigError
from wsiseg.model import (
    FOUNDATION_SPECS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelConfig,
    SamPath,
    TokenGrid,
    load_model,
    load_pathology_weights,
    save_checkpoint,
)
from wsiseg.model.foundation_encoder import FoundationEncoder, create_timm_vit
from wsiseg.model.official import identify_base_weights

#: the model cards' timm calls (architecture, kwargs), written independently of wsiseg's table
CARDS: dict[str, tuple[str, dict[str, Any]]] = {
    "uni": ("vit_large_patch16_224", {"img_size": 224, "patch_size": 16, "init_values": 1e-5}),
    "uni2_h": ("vit_giant_patch14_224", {
        "img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
        "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "no_embed_class": True, "mlp_layer": SwiGLUPacked,
        "act_layer": torch.nn.SiLU, "reg_tokens": 8}),
    "virchow2": ("vit_huge_patch14_224", {
        "img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "reg_tokens": 4,
        "mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU}),
    "h_optimus_0": ("vit_giant_patch14_reg4_dinov2", {"img_size": 224, "init_values": 1e-5}),
    "h_optimus_1": ("vit_giant_patch14_reg4_dinov2", {"img_size": 224, "init_values": 1e-5}),
    "prov_gigapath": ("vit_giant_patch14_dinov2", {
        "img_size": 224, "in_chans": 3, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24,
        "init_values": 1e-5, "mlp_ratio": 5.33334}),
}
#: published sizes (parameters, millions) and widths, from the model cards
PUBLISHED = {"uni": (303, 1024), "uni2_h": (681, 1536), "virchow2": (632, 1280), "h_optimus_0": (1134, 1536),
             "h_optimus_1": (1134, 1536), "prov_gigapath": (1135, 1536)}
TINY = {"embed_dim": 48, "depth": 2, "num_heads": 2}
FULL = sorted(CARDS)


def card_model(name: str, *, tiny: bool = False, meta: bool = False) -> torch.nn.Module:
    """The model card's own timm model (dynamic image size on, head off, as wsiseg runs it)."""
    arch, kwargs = CARDS[name]
    kwargs = {**kwargs, **(TINY if tiny else {}), "num_classes": 0, "dynamic_img_size": True}
    if meta:
        with torch.device("meta"):
            return timm.create_model(arch, pretrained=False, **kwargs)
    return timm.create_model(arch, pretrained=False, **kwargs).eval()


def official_file(tmp: Path, name: str, fmt: str, seed: int = 3) -> tuple[Path, dict[str, torch.Tensor]]:
    """A file in the published layout (timm's keys) with random values, from the card's tiny model."""
    torch.manual_seed(seed)
    state = {k: torch.randn_like(v) * 0.05 for k, v in card_model(name, tiny=True).state_dict().items()}
    path = tmp / (f"{name}.safetensors" if fmt == "safetensors" else f"{name}.bin")
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path, state


def tiny_model(name: str, token_grid: TokenGrid = TokenGrid.RESIZE_INPUT, input_size: int = 64) -> SamPath:
    return SamPath(ModelConfig.from_preset("tiny", 3, input_size=input_size, pathology_encoder=f"{name}_tiny",
                                           token_grid=token_grid))


@pytest.mark.parametrize("name", FULL)
def test_full_size_architecture_is_the_model_cards(name: str) -> None:
    """Same modules (repr: layers, sizes, activations, layer scale, norms) and the same keys and shapes as
    the card's timm call; parameter counts and widths as published."""
    vit = create_timm_vit(FOUNDATION_SPECS[name], meta=True)
    card = card_model(name, meta=True)
    assert repr(vit) == repr(card)
    shapes = {k: v.shape for k, v in card.state_dict().items()}
    assert {k: v.shape for k, v in vit.state_dict().items()} == shapes
    params = sum(v.numel() for v in vit.state_dict().values())
    assert round(params / 1e6) == pytest.approx(PUBLISHED[name][0], abs=1)
    assert vit.embed_dim == PUBLISHED[name][1]


def test_full_size_uni_patch_tokens_equal_timm() -> None:
    """The one full-size model cheap enough for every CI run (ViT-L, 3 s): exact against timm at 64 px."""
    torch.manual_seed(0)
    enc = FoundationEncoder(FOUNDATION_SPECS["uni"], 64, input_norm=(IMAGENET_MEAN, IMAGENET_STD)).eval()
    card = card_model("uni")
    card.load_state_dict(enc.vit.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = enc(x)
        theirs = card.forward_features(x)[:, 1:].reshape(1, 4, 4, 1024).permute(0, 3, 1, 2)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("WSISEG_FULL_SIZE_TESTS"),
                    reason="ViT-H/g at full size: 15-40 s each on 2 cores; set WSISEG_FULL_SIZE_TESTS=1")
@pytest.mark.parametrize("name", ["uni2_h", "virchow2", "h_optimus_0", "prov_gigapath"])
def test_full_size_vit_h_and_g_patch_tokens_equal_timm(name: str) -> None:
    """The same for the ViT-H/g models (15-40 s each to initialise on 2 cores, 2 minutes together: run
    with WSISEG_FULL_SIZE_TESTS=1, as for the release notes; their architectures are checked on every run
    by test_full_size_architecture_is_the_model_cards)."""
    torch.manual_seed(0)
    enc = FoundationEncoder(FOUNDATION_SPECS[name], 64, input_norm=(IMAGENET_MEAN, IMAGENET_STD)).eval()
    card = card_model(name)
    card.load_state_dict(enc.vit.state_dict())
    spec = FOUNDATION_SPECS[name]
    x = torch.randn(1, 3, 64, 64)
    side = 4 * spec.patch
    with torch.no_grad():
        ours = enc(x)
        fp_in = _renormalised(x, spec.mean, spec.std, side)
        theirs = card.forward_features(fp_in)[:, card.num_prefix_tokens:]
    torch.testing.assert_close(ours, theirs.reshape(1, 4, 4, -1).permute(0, 3, 1, 2), rtol=0, atol=1e-5)


def _renormalised(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                  side: int) -> torch.Tensor:
    """ImageNet-normalised ``x`` -> the model's own normalisation, resized to ``side`` (hand-written)."""
    rgb = x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    own = (rgb - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    if side != x.shape[-1]:
        own = torch.nn.functional.interpolate(own, size=(side, side), mode="bilinear", align_corners=False,
                                              antialias=True)
    return own


@pytest.mark.parametrize("name", FULL)
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_official_file_loads_exactly_and_tokens_equal_timm(tmp_path: Path, name: str, fmt: str) -> None:
    path, state = official_file(tmp_path, name, fmt)
    model = tiny_model(name)
    digest = load_pathology_weights(model, path)
    enc = model.pathology_encoder
    assert isinstance(enc, FoundationEncoder)
    own = enc.vit.state_dict()
    assert set(own) == set(state)
    for key, value in state.items():
        assert torch.equal(own[key], value), key
    assert model.base_weights["hipt"]["sha256"] == digest and len(digest) == 64

    card = card_model(name, tiny=True)
    card.load_state_dict(state)
    spec = FOUNDATION_SPECS[name]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = enc(x)
        theirs = card.forward_features(_renormalised(x, spec.mean, spec.std, 4 * spec.patch))
    expected = theirs[:, card.num_prefix_tokens:].reshape(2, 4, 4, 48).permute(0, 3, 1, 2)
    assert ours.shape == (2, 48, 4, 4)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_position_table_is_resampled_by_timm_not_stored_resized(tmp_path: Path) -> None:
    """The stored table stays at the pretraining grid (16 x 16 for 224 / 14) whatever the working size."""
    path, state = official_file(tmp_path, "h_optimus_0", "safetensors")
    for size in (64, 128):
        model = tiny_model("h_optimus_0", input_size=size)
        load_pathology_weights(model, path)
        enc = model.pathology_encoder
        assert isinstance(enc, FoundationEncoder)
        assert torch.equal(enc.vit.pos_embed, state["pos_embed"]) and state["pos_embed"].shape[1] == 256


@pytest.mark.parametrize("name", ["virchow2", "uni2_h", "h_optimus_0"])
def test_resample_features_grid(tmp_path: Path, name: str) -> None:
    """RESAMPLE_FEATURES: Fp sees the input itself (whole patches of it: 9 x 9 tokens over the first 126 px
    of 128) and its token grid is resized to S/16 = 8; by hand with timm."""
    path, state = official_file(tmp_path, name, "bin")
    model = tiny_model(name, TokenGrid.RESAMPLE_FEATURES, input_size=128)
    load_pathology_weights(model, path)
    card = card_model(name, tiny=True)
    card.load_state_dict(state)
    spec = FOUNDATION_SPECS[name]
    x = torch.randn(1, 3, 128, 128)
    g = 128 // spec.patch
    assert g == 9
    with torch.no_grad():
        ours = model.pathology_encoder(x)  # type: ignore[misc]
        own = _renormalised(x, spec.mean, spec.std, 128)[..., :g * spec.patch, :g * spec.patch]
        tokens = card.forward_features(own)[:, card.num_prefix_tokens:]
        tokens = tokens.reshape(1, g, g, 48).permute(0, 3, 1, 2)
        tokens = torch.nn.functional.interpolate(tokens, size=(8, 8), mode="bilinear", align_corners=False,
                                                 antialias=True)
    assert ours.shape == (1, 48, 8, 8)
    torch.testing.assert_close(ours, tokens, rtol=0, atol=1e-5)


def test_token_grid_is_recorded_and_a_model_runs_as_trained(tmp_path: Path) -> None:
    from wsiseg.classes import ClassList

    path, _ = official_file(tmp_path, "virchow2", "safetensors")
    torch.manual_seed(1)
    model = tiny_model("virchow2", TokenGrid.RESAMPLE_FEATURES)
    load_pathology_weights(model, path)
    ckpt = save_checkpoint(model, tmp_path / "m.wsiseg", classes=ClassList.from_names(["a", "b", "c"]),
                           mpp=1.0, tile_size=64)
    loaded = load_model(ckpt, device="cpu", hipt_checkpoint=path)
    assert loaded.model.config.token_grid is TokenGrid.RESAMPLE_FEATURES
    assert loaded.model.config.hipt == "virchow2_tiny"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x)[0], model(x)[0], rtol=0, atol=0)
    raw = torch.load(ckpt, weights_only=True)
    assert raw["base"]["hipt"]["sha256"] == model.base_weights["hipt"]["sha256"]
    assert not any(k.startswith("pathology_encoder.") for k in raw["state_dict"])  # slim: not stored


def test_reduction_takes_768_plus_fp_width() -> None:
    with torch.device("meta"):
        for name in FULL:
            model = SamPath(ModelConfig.from_preset("sam_path_vit_b", 6, pathology_encoder=name))
            assert model.reduction is not None
            assert model.reduction.layers[0].in_channels == 768 + PUBLISHED[name][1]


@pytest.mark.parametrize("name", FULL)
def test_identified_by_layout(tmp_path: Path, name: str) -> None:
    path, _ = official_file(tmp_path, name, "safetensors")
    if name.startswith("h_optimus"):  # -0 and -1 share one layout: the caller says which
        with pytest.raises(CheckpointError, match="layout of h_optimus_0_tiny and of h_optimus_1_tiny"):
            identify_base_weights(path)
        assert identify_base_weights(path, f"{name}_tiny") == ("hipt", f"{name}_tiny")
    else:
        assert identify_base_weights(path) == ("hipt", f"{name}_tiny")
    with pytest.raises(CheckpointError, match="is not the weights file of hipt_tiny"):
        identify_base_weights(path, "hipt_tiny")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_wrong_or_partial_files_name_the_key(tmp_path: Path, fmt: str) -> None:
    _, state = official_file(tmp_path, "uni", fmt)
    model = tiny_model("uni")

    def write(s: dict[str, torch.Tensor], stem: str) -> Path:
        p = tmp_path / f"{stem}.{fmt}"
        if fmt == "safetensors":
            save_file(s, str(p))
        else:
            torch.save(s, p)
        return p

    partial = {k: v for k, v in state.items() if k != "blocks.1.mlp.fc2.weight"}
    with pytest.raises(CheckpointError, match=r"lacks key 'blocks\.1\.mlp\.fc2\.weight'"):
        load_pathology_weights(model, write(partial, "partial"))
    shaped = {**state, "pos_embed": torch.zeros(1, 5, 48)}
    with pytest.raises(CheckpointError, match=r"key 'pos_embed' has shape \[1, 5, 48\]"):
        load_pathology_weights(model, write(shaped, "shape"))
    extra = {**state, "blocks.9.attn.qkv.weight": torch.zeros(3, 3)}
    with pytest.raises(CheckpointError, match=r"unexpected key 'blocks\.9\.attn\.qkv\.weight'.*uni_tiny"):
        load_pathology_weights(model, write(extra, "extra"))
    other, _ = official_file(tmp_path, "virchow2", fmt)
    with pytest.raises(CheckpointError, match=r"is it the file of uni_tiny"):
        load_pathology_weights(model, other)


def test_truncated_and_foreign_files(tmp_path: Path) -> None:
    path, _ = official_file(tmp_path, "uni", "safetensors")
    cut = tmp_path / "cut.safetensors"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    model = tiny_model("uni")
    with pytest.raises(CheckpointError, match=r"not a readable .*weights file"):
        load_pathology_weights(model, cut)
    text = tmp_path / "notes.bin"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_pathology_weights(model, text)


def test_planted_pickle_in_a_bin_file_never_runs(tmp_path: Path, marker: Path, planted: object) -> None:
    _, state = official_file(tmp_path, "uni", "bin")
    path = tmp_path / "pytorch_model.bin"
    torch.save({**state, "cls_token": planted}, path)
    with pytest.raises(CheckpointError, match="Unsupported global"):
        load_pathology_weights(tiny_model("uni"), path)
    with pytest.raises(CheckpointError):
        identify_base_weights(path)
    assert not marker.exists()


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown pathology encoder 'unii'"):
        ModelConfig.from_preset("tiny", 2, pathology_encoder="unii")
    with pytest.raises(ConfigError, match="unknown token grid"):
        ModelConfig.from_preset("tiny", 2, pathology_encoder="uni_tiny", token_grid="nearest")
    with pytest.raises(ConfigError, match="applies to patch-14 pathology encoders"):
        ModelConfig.from_preset("tiny", 2, pathology_encoder="uni_tiny", token_grid="resample_features")
    with pytest.raises(ConfigError, match="only in the reference layout"):
        ModelConfig.from_dict({"variant": "sam_path", "sam": "sam_tiny", "hipt": "uni_tiny", "num_classes": 2,
                               "input_size": 64})
    sam_only = SamPath(ModelConfig.from_preset("tiny", 2, input_size=64, variant="finetuned_sam"))
    with pytest.raises(ConfigError, match="no pathology encoder"):
        load_pathology_weights(sam_only, Path(os.devnull))


def test_patch14_grid_choices_cost() -> None:
    """RESIZE_INPUT feeds a patch-14 Fp 14 G px (G^2 tokens), RESAMPLE_FEATURES floor(S/14)^2 tokens."""
    enc = tiny_model("virchow2", input_size=1024).pathology_encoder
    assert isinstance(enc, FoundationEncoder) and enc.fp_input_size == 896
    resampled = tiny_model("virchow2", TokenGrid.RESAMPLE_FEATURES, input_size=1024).pathology_encoder
    assert isinstance(resampled, FoundationEncoder) and resampled.fp_input_size == 1024
    uni = tiny_model("uni", input_size=1024).pathology_encoder
    assert isinstance(uni, FoundationEncoder) and uni.fp_input_size == 1024
    # the choice is recorded where it matters only
    assert "token_grid" not in ModelConfig.from_preset("tiny", 2, pathology_encoder="uni_tiny").to_dict()
    assert ModelConfig.from_preset("tiny", 2, pathology_encoder="virchow2_tiny").to_dict()["token_grid"] == (
        "resize_input")


@pytest.mark.parametrize(("name", "dim", "hidden", "depth", "fp_in"), [
    ("uni", 1024, 4096, 24, 1024), ("virchow2", 1280, 6832, 32, 896),
    ("prov_gigapath", 1536, 8192, 40, 1024)])
def test_flops_per_tile_match_the_hand_count(name: str, dim: int, hidden: int, depth: int,
                                             fp_in: int) -> None:
    """benchmarks/bench_encoders.py counts FLOPs with torch's counter on the meta device; per ViT block
    by hand: 2 N (4 D^2 + D H_in + D H_out) for qkv, proj and the MLP (SwiGLUPacked: H_out = H_in / 2),
    + 4 N^2 D for attention, N = the 4096 patch tokens at 1024 px + the prefix tokens (CLS, registers);
    plus the patch embedding 2 x 4096 (3 p^2) D."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = FOUNDATION_SPECS[name]
    swiglu = spec.kwargs.get("mlp_layer") == "swiglu_packed" or name == "prov_gigapath"
    patches, p = (fp_in // spec.patch) ** 2, spec.patch
    n = patches + 1 + int(spec.kwargs.get("reg_tokens", 4 if "reg4" in spec.arch else 0))
    mlp = dim * hidden + dim * (hidden // 2 if swiglu else hidden)
    block = 2 * n * (4 * dim * dim + mlp) + 4 * n * n * dim
    hand = depth * block + 2 * patches * 3 * p * p * dim
    with torch.device("meta"):
        enc = FoundationEncoder(spec, 1024, input_norm=(IMAGENET_MEAN, IMAGENET_STD))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            enc(torch.empty(1, 3, 1024, 1024))
    assert counter.get_total_flops() == pytest.approx(hand, rel=1e-6)
