"""SamPath architecture: shapes, the encode/decode split, variants, freezing, full-size parameter counts."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from segment_anything import build_sam_vit_b

from wsiseg.classes import ClassList
from wsiseg.errors import ClassMismatchError, ConfigError
from wsiseg.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelConfig,
    ModelLayout,
    Predictor,
    SamPath,
    SamPathPredictor,
    Variant,
    logits_to_probs,
    to_model_input,
)
from wsiseg.model.predictor import native_output_stride
from wsiseg.model.presets import hipt_vit_s, sam_vit_b, sam_vit_h, sam_vit_l

CLASSES = ClassList.from_names(["background", "tumour", "stroma"])


def tiny(variant: Variant = Variant.SAM_PATH, k: int = 3, size: int = 128, **kw: bool) -> SamPath:
    torch.manual_seed(0)
    return SamPath(ModelConfig.from_preset("tiny", k, variant=variant, input_size=size, **kw))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("variant", "channels"), [
    (Variant.SAM_PATH, 64 + 48), (Variant.FINETUNED_SAM, 256), (Variant.PATHOLOGY_ONLY, 48),
    (Variant.SAM_PRE_NECK, 64)])
def test_variants_build_and_forward(variant: Variant, channels: int) -> None:
    model = tiny(variant, k=4)
    assert (model.sam_encoder is None) == (variant is Variant.PATHOLOGY_ONLY)
    assert (model.pathology_encoder is None) == (variant in (Variant.FINETUNED_SAM, Variant.SAM_PRE_NECK))
    assert model.feature_channels == channels
    if variant is Variant.FINETUNED_SAM:  # SAM's own neck feeds the decoder; there is no R
        assert model.reduction is None and model.sam_encoder is not None and model.sam_encoder.has_neck
    else:
        assert model.reduction is not None and model.reduction.layers[0].in_channels == channels
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        feats = model.encode(x)
        logits, iou = model(x)
        logits2, iou2 = model.decode(feats)
    assert feats.shape == (2, channels, 8, 8)
    # 4 classes + the reference's "unlabeled" channel 0
    assert model.num_channels == 5
    assert logits.shape == (2, 5, 32, 32) and iou.shape == (2, 5)
    assert torch.equal(model.class_logits(logits), logits[:, 1:])
    assert torch.equal(logits, logits2) and torch.equal(iou, iou2)
    # images in a batch are independent (SAM's own predict_masks would mix a batch of token sets)
    with torch.no_grad():
        single, _ = model(x[1:])
    torch.testing.assert_close(single[0], logits[1], rtol=1e-4, atol=1e-4)


def test_mini_preset_is_the_deeper_cpu_training_model() -> None:
    """``mini`` (glas-cpu.yaml's model): 4-block encoders, 96 + 64 channels into R, the tiny preset's
    decoder; 256-px input gives a 16 x 16 token grid and 64 x 64 logits."""
    model = SamPath(ModelConfig.from_preset("mini", 2, train_encoders=True))
    assert model.input_size == 256 and model.feature_channels == 96 + 64
    assert model.sam_encoder is not None and model.pathology_encoder is not None
    assert len(model.sam_encoder.blocks) == 4 and len(model.pathology_encoder.blocks) == 4
    assert n_params(model.mask_decoder) == n_params(tiny(k=2).mask_decoder)
    with torch.no_grad():
        logits, iou = model(torch.randn(1, 3, 256, 256))
    assert logits.shape == (1, 3, 64, 64) and iou.shape == (1, 3)


def test_encode_concatenates_fs_then_fp() -> None:
    model = tiny()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        feats = model.encode(x)
        assert model.sam_encoder is not None and model.pathology_encoder is not None
        fs = model.sam_encoder.neck(model.sam_encoder.blocks[-1](
            model.sam_encoder.blocks[0](model.sam_encoder.patch_embed(x) + model.sam_encoder.pos_embed)))
        fp = model.pathology_encoder(x)
    torch.testing.assert_close(feats[:, :64], fs.permute(0, 3, 1, 2))
    torch.testing.assert_close(feats[:, 64:], fp)


def test_reduction_is_conv_ln_conv_ln() -> None:
    model = tiny()
    assert model.reduction is not None
    r = model.reduction.layers
    assert [type(m).__name__ for m in r] == ["Conv2d", "LayerNorm2d", "Conv2d", "LayerNorm2d"]
    assert r[0].kernel_size == (1, 1) and r[0].bias is None and r[0].out_channels == 256
    assert r[2].kernel_size == (3, 3) and r[2].padding == (1, 1) and r[2].bias is None
    x = torch.randn(1, 112, 8, 8)
    with torch.no_grad():
        y = model.reduction(x)
    # each LayerNorm2d output (weight 1, bias 0 at init) has zero mean and unit variance over channels
    torch.testing.assert_close(y.mean(1), torch.zeros(1, 8, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(1, 8, 8), atol=1e-3, rtol=0)


def test_decoder_slots_and_prompts() -> None:
    """REFERENCE section 9: k classes -> k + 1 channels (0 = "unlabeled") -> k + 2 mask tokens, each with
    its own hypernetwork MLP, and an IoU head ending in Linear(256, k + 2); token 0 is dropped."""
    model = tiny(k=5)
    dec = model.mask_decoder
    assert dec.mask_tokens.weight.shape == (7, 256)
    assert len(dec.output_hypernetworks_mlps) == 7
    assert dec.iou_prediction_head.layers[-1].out_features == 7
    # the dense prompt is no_mask_embed broadcast over the grid; the PE is SAM's random-Fourier grid
    dense = model.prompt_encoder.dense_prompt(2)
    assert dense.shape == (2, 256, 8, 8)
    assert torch.equal(dense[1, :, 3, 4], model.prompt_encoder.no_mask_embed.weight[0])
    pe = model.prompt_encoder.dense_pe()
    gauss = model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    c = torch.tensor([(4 + 0.5) / 8, (3 + 0.5) / 8]) * 2 - 1  # (x, y) of cell row 3, col 4
    proj = 2 * np.pi * (c @ gauss)
    torch.testing.assert_close(pe[0, :, 3, 4], torch.cat([proj.sin(), proj.cos()]))


def test_frozen_encoders_get_no_gradient_and_do_not_change() -> None:
    model = tiny(size=128)
    model.train()
    assert model.reduction is not None
    assert model.training and model.reduction.training and model.mask_decoder.training
    assert model.sam_encoder is not None and model.pathology_encoder is not None
    assert not model.sam_encoder.training and not model.pathology_encoder.training
    assert not model.prompt_encoder.training
    frozen = {k: v.clone() for k, v in model.state_dict().items()
              if k.startswith(("sam_encoder.", "pathology_encoder.", "prompt_encoder."))}
    trainable = {k: v.clone() for k, v in model.state_dict().items()
                 if k.startswith(("reduction.", "mask_decoder."))}
    params = [p for p in model.parameters() if p.requires_grad]
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"reduction",
                                                                                          "mask_decoder"}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randn(2, 3, 128, 128)
    target = torch.randint(0, 4, (2, 32, 32))
    logits, iou = model(x)
    loss = F.cross_entropy(logits, target) + iou.square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith(("sam_encoder.", "pathology_encoder.", "prompt_encoder.")):
            assert p.grad is None, name
    assert all(p.grad is not None for p in params)
    opt.step()
    after = model.state_dict()
    for k, v in frozen.items():
        assert torch.equal(after[k], v), k
    changed = [k for k, v in trainable.items() if not torch.equal(after[k], v)]
    # every trainable tensor moves except the unused slot-0 hypernetwork (its mask is dropped)
    unchanged = sorted(set(trainable) - set(changed))
    assert all(k.startswith("mask_decoder.output_hypernetworks_mlps.0.") for k in unchanged), unchanged
    assert "mask_decoder.mask_tokens.weight" in changed and "reduction.layers.0.weight" in changed


def test_train_encoders_makes_them_trainable() -> None:
    model = tiny(size=128, train_encoders=True)
    model.train()
    assert model.sam_encoder is not None and model.sam_encoder.training
    before = model.sam_encoder.patch_embed.proj.weight.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    logits, _ = model(torch.randn(1, 3, 128, 128))
    logits.logsumexp(1).mean().backward()
    assert model.sam_encoder.patch_embed.proj.weight.grad is not None
    opt.step()
    assert not torch.equal(model.sam_encoder.patch_embed.proj.weight, before)
    assert model.prompt_encoder.no_mask_embed.weight.grad is None  # the prompt state stays frozen


def test_predictor_matches_manual_pipeline() -> None:
    model = tiny(size=128)
    pred = SamPathPredictor(model, CLASSES, mpp=0.5, tile_size=96, device="cpu")
    assert isinstance(pred, Predictor)
    tiles = np.random.default_rng(1).integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    probs, iou = pred.predict_with_iou(tiles)
    assert probs.dtype == np.float32 and probs.shape == (3, 3, 96, 96) and iou.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # by hand (the reference's order): 0..1, ImageNet normalisation, bilinear resize to 128, forward,
    # the real classes' logits (channel 0, "unlabeled", left out) upsampled, softmax
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    x = F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits, iou_ref = model(x)
    logits, iou_ref = logits[:, 1:], iou_ref[:, 1:]
    ref = torch.softmax(F.interpolate(logits, size=(96, 96), mode="bilinear", align_corners=False), 1)
    np.testing.assert_allclose(probs, ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(iou, iou_ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(pred.predict(tiles[:1]), probs[:1], atol=1e-6)
    assert pred.predict(np.zeros((0, 96, 96, 3), np.uint8)).shape == (0, 3, 96, 96)
    prov = pred.provenance()
    assert prov["config"]["variant"] == "sam_path" and prov["classes"] == CLASSES.names
    assert prov["mpp"] == 0.5 and prov["tile_size"] == 96
    # the native grid: 128 px input -> 32 x 32 logits for 96 px tiles, a stride of 3, rounded down to a
    # power of two dividing the tile; asked for the logits' own size there is no resizing at all
    assert pred.output_stride == 2 and prov["output_stride"] == 2
    np.testing.assert_allclose(pred.predict(tiles, 32), torch.softmax(logits, 1).numpy(), atol=1e-6)
    coarse = pred.predict(tiles, 24)
    assert coarse.shape == (3, 3, 24, 24)
    np.testing.assert_allclose(coarse.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("tile", "input_size", "stride"), [
    (1024, 1024, 4), (512, 1024, 2), (2048, 1024, 8), (256, 256, 4), (96, 128, 2), (100, 1024, 1),
    (1000, 1024, 2),
])
def test_native_output_stride(tile: int, input_size: int, stride: int) -> None:
    assert native_output_stride(tile, input_size) == stride


def test_to_model_input_values() -> None:
    tiles = np.zeros((1, 4, 4, 3), np.uint8)
    tiles[..., 0] = 255
    x = to_model_input(torch.from_numpy(tiles), 4)
    expected = [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1],
                -IMAGENET_MEAN[2] / IMAGENET_STD[2]]
    torch.testing.assert_close(x[0, :, 2, 1], torch.tensor(expected))
    stripes = np.tile(np.array([255, 0, 0, 0], np.uint8), (16, 4))
    rgb = torch.from_numpy(np.stack([stripes] * 3, -1)[None])
    # the reference (REFERENCE section 9): plain bilinear, which samples between pixels 1 and 2 of each
    # period of stripes 255,0,0,0 at 16 -> 4 px and gives 0 there
    x = to_model_input(rgb, 4, (0, 0, 0), (1, 1, 1))
    torch.testing.assert_close(x, torch.zeros(1, 3, 4, 4))
    # layout v1: antialiased shrinking averages the period to 255/4
    x = to_model_input(rgb, 4, (0, 0, 0), (1, 1, 1), antialias=True)
    torch.testing.assert_close(x[..., 1:3], torch.full((1, 3, 4, 2), 0.25))


def test_logits_to_probs_is_softmax_of_bilinear_upsampling() -> None:
    logits = torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]]])  # (1, 2 classes, 1, 2)
    p = logits_to_probs(logits, (1, 4))
    # align_corners=False: output x=0 samples input 0 (clamped), x=1 samples 0.25 between columns
    c0 = torch.tensor([0.0, 0.5, 1.5, 2.0])
    torch.testing.assert_close(p[0, 0, 0], torch.sigmoid(c0 - 1.0))


def test_predictor_rejects_bad_inputs() -> None:
    model = tiny()
    with pytest.raises(ClassMismatchError):
        SamPathPredictor(model, ClassList.from_names(["a", "b"]), device="cpu")
    with pytest.raises(ConfigError, match="fp16"):
        SamPathPredictor(model, CLASSES, device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="precision"):
        SamPathPredictor(model, CLASSES, device="cpu", precision="int8")
    with pytest.raises(ConfigError, match="device"):
        SamPathPredictor(model, CLASSES, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            SamPathPredictor(model, CLASSES, device="cuda")
    pred = SamPathPredictor(model, CLASSES, device="cpu")
    with pytest.raises(ValueError, match="uint8"):
        pred.predict(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        pred.predict(np.zeros((8, 8, 3), np.uint8))


def test_bf16_autocast_on_cpu_close_to_fp32() -> None:
    model = tiny()
    tiles = np.random.default_rng(2).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    p32 = SamPathPredictor(model, CLASSES, device="cpu").predict(tiles)
    p16 = SamPathPredictor(model, CLASSES, device="cpu", precision="bf16").predict(tiles)
    assert p16.dtype == np.float32
    np.testing.assert_allclose(p16.sum(1), 1.0, atol=1e-5)
    assert np.abs(p16 - p32).max() < 0.1


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="needs"):
        ModelConfig(Variant.SAM_PRE_NECK, "sam_tiny", "hipt_tiny", 3, 128)
    with pytest.raises(ConfigError, match="multiple of 16"):
        ModelConfig.from_preset("tiny", 3, input_size=100)
    with pytest.raises(ConfigError, match="unknown model preset"):
        ModelConfig.from_preset("huge", 3)
    with pytest.raises(ConfigError, match="unknown SAM encoder preset"):
        SamPath(ModelConfig(Variant.SAM_PRE_NECK, "sam_vit_x", None, 3, 128))
    cfg = ModelConfig.from_preset("sam_path_vit_b", 5)
    assert (cfg.sam, cfg.hipt, cfg.input_size, cfg.layout) == ("sam_vit_b", "hipt_vit_s", 1024,
                                                               ModelLayout.REFERENCE)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    # wsiseg 0.1 configs: no layout (-> v1) and "sam_only" (-> sam_pre_neck, its new name)
    old = {"variant": "sam_only", "sam": "sam_tiny", "hipt": None, "num_classes": 3, "input_size": 128}
    assert ModelConfig.from_dict(old) == ModelConfig(Variant.SAM_PRE_NECK, "sam_tiny", None, 3, 128,
                                                     layout=ModelLayout.V1)
    assert ModelConfig.from_preset("sam_path_vit_b", 5, variant="sam_only").hipt is None
    assert ModelConfig.from_preset("sam_vit_b_only", 5).variant is Variant.FINETUNED_SAM
    with pytest.raises(ConfigError, match="no encoder for variant"):
        ModelConfig.from_preset("hipt_only", 5, variant="sam_path")
    with pytest.raises(ConfigError, match="unknown variant"):
        ModelConfig.from_preset("tiny", 5, variant="sam")


def test_full_size_parameter_counts_equal_segment_anything_and_timm() -> None:
    with torch.device("meta"):
        sam = build_sam_vit_b()
        ours = SamPath(ModelConfig.from_preset("sam_path_vit_b", 2))
        vit_s = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
        hipt_224 = hipt_vit_s(224)
        encoders = {"sam_vit_l": (sam_vit_l(), 1024, 24), "sam_vit_h": (sam_vit_h(), 1280, 32)}
    assert ours.sam_encoder is not None and ours.pathology_encoder is not None
    assert n_params(ours.sam_encoder) == n_params(sam.image_encoder) - n_params(sam.image_encoder.neck)
    assert n_params(ours.sam_encoder) == 88_883_456  # ViT-B: 89,670,912 with its 787,456-parameter neck
    assert n_params(ours.mask_decoder.transformer) == n_params(sam.mask_decoder.transformer)
    # k = 2 classes + "unlabeled" = 3 channels: the same 4 slots as SAM's decoder
    assert n_params(ours.mask_decoder) == n_params(sam.mask_decoder)
    assert n_params(hipt_224) == n_params(vit_s) == 21_665_664  # HIPT ViT-S/16 at its 224 pretraining size
    # the 14x14 position table is stored as pretrained and interpolated on the fly at any input size
    assert n_params(ours.pathology_encoder) == n_params(vit_s)
    assert ours.sam_encoder.pos_embed.shape == (1, 64, 64, 768)
    assert ours.pathology_encoder.pos_embed.shape == (1, 1 + 14 * 14, 384)
    assert ours.feature_channels == 1152
    assert [i for i, b in enumerate(ours.sam_encoder.blocks) if b.window_size == 0] == [2, 5, 8, 11]
    for enc, dim, depth in encoders.values():
        assert enc.pos_embed.shape[-1] == dim and len(enc.blocks) == depth
    # forward on the meta device checks every shape of the full-size model at 1024 and 512
    for size in (1024, 512):
        with torch.device("meta"):
            m = SamPath(ModelConfig.from_preset("sam_path_vit_b", 2, input_size=size))
            feats = m.encode(torch.empty(1, 3, size, size))
            logits, iou = m.decode(feats)
        assert feats.shape == (1, 1152, size // 16, size // 16)
        assert logits.shape == (1, 3, size // 4, size // 4) and iou.shape == (1, 3)
    assert hipt_vit_s(512).pos_embed.shape[1] == 1 + 32 * 32
    assert sam_vit_b(512).blocks[2].attn.rel_pos_h.shape == (63, 64)


def test_compiled_predictor_pads_small_batches_to_the_compiled_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """compile=True hands the model to torch.compile once; a batch smaller than the first is padded to its
    size (no second compilation for a slide's last batch) and the padding's outputs are dropped. A stand-in
    for torch.compile records the batch sizes the compiled function sees (a real compilation takes minutes
    on a CPU; the GPU benchmark compares real compiled outputs with eager ones)."""
    seen: list[int] = []

    def fake_compile(fn):  # type: ignore[no-untyped-def]
        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            seen.append(int(x.shape[0]))
            return fn(x)  # type: ignore[no-any-return]
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = tiny(size=64)
    eager = SamPathPredictor(model, CLASSES, device="cpu")
    compiled = SamPathPredictor(model, CLASSES, device="cpu", compile=True)
    tiles = np.random.default_rng(3).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    full = compiled.predict(tiles, 16)
    last = compiled.predict(tiles[:3], 16)
    assert seen == [4, 4] and last.shape == (3, 3, 16, 16)
    np.testing.assert_allclose(full, eager.predict(tiles, 16), atol=1e-6)
    np.testing.assert_allclose(last, eager.predict(tiles[:3], 16), atol=1e-6)
    assert compiled.provenance()["compiled"] is True


def test_lanes_default_and_the_first_compiled_call_runs_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """One lane on the CPU (2 on CUDA, not testable here: benchmarks/check_cuda_lanes.py checks that path on
    a GPU); lanes < 1 is refused. With compile=True the first call compiles while the other threads wait for
    it: a stand-in for torch.compile that takes 0.2 s on its first call records how many calls overlap it."""
    import threading
    import time

    model = tiny(size=64)
    assert SamPathPredictor(model, CLASSES, device="cpu").lanes == 1
    assert SamPathPredictor(model, CLASSES, device="cpu", lanes=3).lanes == 3
    with pytest.raises(ConfigError, match="lanes"):
        SamPathPredictor(model, CLASSES, device="cpu", lanes=0)

    lock = threading.Lock()
    state = {"running": 0, "overlap_first": 0, "calls": 0}

    def fake_compile(fn):  # type: ignore[no-untyped-def]
        def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with lock:
                state["calls"] += 1
                first = state["calls"] == 1
                state["running"] += 1
            if first:
                time.sleep(0.2)  # "compiling"
                state["overlap_first"] = state["calls"] - 1  # calls that started meanwhile
            with lock:
                state["running"] -= 1
            return fn(x)  # type: ignore[no-any-return]
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    compiled = SamPathPredictor(model, CLASSES, device="cpu", compile=True, lanes=3)
    tiles = np.random.default_rng(4).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    want = SamPathPredictor(model, CLASSES, device="cpu").predict(tiles, 16)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda _: compiled.predict(tiles, 16), range(6)))
    assert state["calls"] == 6 and state["overlap_first"] == 0
    for g in got:
        np.testing.assert_allclose(g, want, atol=1e-6)


@pytest.mark.parametrize(("size", "table"), [(1, 1), (3, 5), (14, 27), (64, 127), (8, 27)])
def test_rel_pos_lookup_equals_segment_anythings(size: int, table: int) -> None:
    """The relative-position lookup with its index made on the table's device (no index copy to the GPU)
    equals segment-anything's get_rel_pos, including tables of another length (interpolated there)."""
    from segment_anything.modeling.image_encoder import get_rel_pos

    from wsiseg.model.attention import _rel_pos

    rel = torch.randn(table, 8, generator=torch.Generator().manual_seed(size))
    assert torch.equal(_rel_pos(size, rel), get_rel_pos(size, size, rel))
