"""wsiseg's own ``.wsiseg`` checkpoints: round trips, slim vs self-contained, sha256 checks, errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from wsiseg._version import __version__
from wsiseg.classes import ClassList
from wsiseg.errors import CheckpointError, ClassMismatchError
from wsiseg.model import (
    ModelConfig,
    SamPath,
    SamPathPredictor,
    Variant,
    load_hipt_weights,
    load_model,
    load_sam_weights,
    read_checkpoint,
    save_checkpoint,
)

CLASSES = ClassList.from_names(["background", "tumour", "stroma"],
                               [(255, 255, 255), (200, 0, 0), (0, 150, 0)])
TILES = np.random.default_rng(3).integers(0, 256, (2, 80, 80, 3), dtype=np.uint8)


def _trained(model: SamPath, seed: int = 11) -> SamPath:
    """Stand in for training: new values in R and the decoder."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("reduction.", "mask_decoder.")):
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("variant", list(Variant))
def test_round_trip_random_encoders_gives_identical_outputs(tmp_path: Path, variant: Variant) -> None:
    torch.manual_seed(1)
    model = _trained(SamPath(ModelConfig.from_preset("tiny", 3, variant=variant, input_size=64)))
    ref = SamPathPredictor(model, CLASSES, device="cpu").predict_with_iou(TILES)
    path = save_checkpoint(model, tmp_path / "m.wsiseg", classes=CLASSES, mpp=1.0, tile_size=512,
                           extra_provenance={"recipe": "unit-test"})
    # no base files: everything is stored, the file alone rebuilds the model
    pred = load_model(path, device="cpu")
    probs, iou = pred.predict_with_iou(TILES)
    np.testing.assert_array_equal(probs, ref[0])
    np.testing.assert_array_equal(iou, ref[1])
    assert pred.classes == CLASSES and pred.mpp == 1.0 and pred.tile_size == 512
    prov = pred.provenance()
    assert prov["config"] == model.config.to_dict()
    assert prov["checkpoint"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["trained"]["recipe"] == "unit-test" and prov["trained"]["wsiseg_version"] == __version__


def test_file_content(tmp_path: Path) -> None:
    model = SamPath(ModelConfig.from_preset("tiny", 3, input_size=64))
    path = save_checkpoint(model, tmp_path / "m.wsiseg", classes=CLASSES, mpp=0.5, tile_size=256)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "wsiseg-checkpoint" and raw["format_version"] == 2
    assert raw["config"] == {"variant": "sam_path", "sam": "sam_tiny", "hipt": "hipt_tiny", "num_classes": 3,
                             "input_size": 64, "train_encoders": False, "layout": "reference"}
    assert raw["classes"] == CLASSES.to_dict()
    assert raw["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert raw["mpp"] == 0.5 and raw["tile_size"] == 256 and raw["base"] == {}
    assert set(raw["state_dict"]) == set(model.state_dict())
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file
    data = read_checkpoint(path)
    assert data.config == model.config and data.classes == CLASSES


def _base_model(files: dict[str, Path], variant: Variant = Variant.SAM_PATH) -> SamPath:
    torch.manual_seed(2)
    model = SamPath(ModelConfig.from_preset("tiny", 3, variant=variant, input_size=64))
    if model.sam_encoder is not None or variant is Variant.PATHOLOGY_ONLY:
        load_sam_weights(model, files["sam"])
    if model.pathology_encoder is not None:
        load_hipt_weights(model, files["hipt"])
    return _trained(model)


def test_slim_checkpoint_needs_and_checks_base_files(tmp_path: Path,
                                                     tiny_base_files: dict[str, Path]) -> None:
    model = _base_model(tiny_base_files)
    ref = SamPathPredictor(model, CLASSES, device="cpu").predict(TILES)
    slim = save_checkpoint(model, tmp_path / "slim.wsiseg", classes=CLASSES, mpp=1.0, tile_size=64)
    full = save_checkpoint(model, tmp_path / "full.wsiseg", classes=CLASSES, mpp=1.0, tile_size=64,
                           self_contained=True)
    raw = torch.load(slim, weights_only=True)
    assert not any(k.startswith(("sam_encoder.", "pathology_encoder.")) for k in raw["state_dict"])
    assert raw["base"]["sam"]["sha256"] == hashlib.sha256(tiny_base_files["sam"].read_bytes()).hexdigest()
    assert raw["base"]["hipt"]["file"] == "hipt_tiny.pth"
    assert slim.stat().st_size < full.stat().st_size
    with pytest.raises(CheckpointError, match=r"slim.*`sam_checkpoint`"):
        load_model(slim, device="cpu")
    with pytest.raises(CheckpointError, match=r"sam_tiny_other\.pth is not the SAM weights file"):
        load_model(slim, device="cpu", sam_checkpoint=tiny_base_files["sam_other"],
                   hipt_checkpoint=tiny_base_files["hipt"])
    with pytest.raises(CheckpointError, match="HIPT weights file not found"):
        load_model(slim, device="cpu", sam_checkpoint=tiny_base_files["sam"],
                   hipt_checkpoint=tmp_path / "nope.pth")
    pred = load_model(slim, device="cpu", sam_checkpoint=tiny_base_files["sam"],
                      hipt_checkpoint=tiny_base_files["hipt"])
    np.testing.assert_array_equal(pred.predict(TILES), ref)
    assert pred.provenance()["base_weights"]["sam"] == raw["base"]["sam"]
    np.testing.assert_array_equal(load_model(full, device="cpu").predict(TILES), ref)


def test_pathology_only_slim_checkpoint_keeps_decoder_from_training(
        tmp_path: Path, tiny_base_files: dict[str, Path]) -> None:
    # w/o Fs: SAM's file only initialised the decoder, so it is not needed again; HIPT is
    model = _base_model(tiny_base_files, Variant.PATHOLOGY_ONLY)
    ref = SamPathPredictor(model, CLASSES, device="cpu").predict(TILES)
    path = save_checkpoint(model, tmp_path / "p.wsiseg", classes=CLASSES, mpp=None, tile_size=64)
    assert set(torch.load(path, weights_only=True)["base"]) == {"hipt"}
    pred = load_model(path, device="cpu", hipt_checkpoint=tiny_base_files["hipt"])
    np.testing.assert_array_equal(pred.predict(TILES), ref)
    assert pred.mpp is None


def test_trainable_encoders_are_always_stored(tmp_path: Path, tiny_base_files: dict[str, Path]) -> None:
    torch.manual_seed(2)
    model = SamPath(ModelConfig.from_preset("tiny_sam_only", 3, input_size=64, train_encoders=True))
    load_sam_weights(model, tiny_base_files["sam"])
    path = save_checkpoint(model, tmp_path / "t.wsiseg", classes=CLASSES, mpp=1.0, tile_size=64)
    raw = torch.load(path, weights_only=True)
    assert raw["base"] == {} and "sam_encoder.pos_embed" in raw["state_dict"]


def test_class_mismatch(tmp_path: Path) -> None:
    model = SamPath(ModelConfig.from_preset("tiny", 3, input_size=64))
    with pytest.raises(ClassMismatchError, match="the model predicts 3 classes but 2 were given"):
        save_checkpoint(model, tmp_path / "x.wsiseg", classes=ClassList.from_names(["a", "b"]), mpp=1.0,
                        tile_size=64)
    path = save_checkpoint(model, tmp_path / "m.wsiseg", classes=CLASSES, mpp=1.0, tile_size=64)
    with pytest.raises(ClassMismatchError, match=r"predicts 3 classes but 4 were given"):
        load_model(path, device="cpu", classes=ClassList.from_names(["a", "b", "c", "d"]))
    renamed = ClassList.from_names(["glass", "tumor", "stroma"])
    assert load_model(path, device="cpu", classes=renamed).classes == renamed


def test_bad_checkpoint_files(tmp_path: Path, tiny_base_files: dict[str, Path]) -> None:
    text = tmp_path / "model.wsiseg"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable wsiseg checkpoint"):
        load_model(text, device="cpu")
    with pytest.raises(CheckpointError, match="official SAM file"):
        load_model(tiny_base_files["sam"], device="cpu")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.wsiseg", device="cpu")
    model = SamPath(ModelConfig.from_preset("tiny", 3, input_size=64))
    good = save_checkpoint(model, tmp_path / "good.wsiseg", classes=CLASSES, mpp=1.0, tile_size=64)
    trunc = tmp_path / "trunc.wsiseg"
    trunc.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(trunc, device="cpu")
    raw = torch.load(good, weights_only=True)
    for edit, message in [
        (lambda r: r["state_dict"].pop("reduction.layers.1.weight"),
         r"lacks key 'reduction\.layers\.1\.weight' \(expected shape \[256\]\)"),
        (lambda r: r["state_dict"].update({"mask_decoder.mask_tokens.weight": torch.zeros(3, 256)}),
         r"'mask_decoder\.mask_tokens\.weight' has shape \[3, 256\], expected \[5, 256\]"),
        (lambda r: r["state_dict"].update({"head.weight": torch.zeros(1)}), "unexpected key 'head.weight'"),
        (lambda r: r.update({"format_version": 99}), "newer than this wsiseg"),
        (lambda r: r.pop("classes"), "malformed wsiseg checkpoint"),
        (lambda r: r["config"].update({"variant": "sam_only"}), "malformed.*needs"),
        (lambda r: r["config"].update({"layout": "v7"}), "malformed"),
    ]:
        bad = {**raw, "state_dict": dict(raw["state_dict"]), "config": dict(raw["config"])}
        edit(bad)
        torch.save(bad, tmp_path / "bad.wsiseg")
        with pytest.raises(CheckpointError, match=message):
            load_model(tmp_path / "bad.wsiseg", device="cpu")


class _Recipe:
    """Stands in for the config objects a Lightning checkpoint pickles into ``hyper_parameters``."""

    def __init__(self) -> None:
        self.lr = 1e-4


def _not_models(tmp_path: Path) -> list[tuple[Path, str]]:
    from wsiseg.train import resume_state

    state = tmp_path / "last.state.pt"
    resume_state.write(state, optimizer={}, scheduler={}, scaler={}, epoch=3, best_score=0.5, history=[],
                       config={})
    legacy_state = tmp_path / "legacy.state.pt"  # wsiseg 0.1's: no format tag, NumPy's RNG array pickled
    torch.save({"optimizer": {}, "scheduler": {}, "rng": {"numpy": ("MT19937", np.zeros(3, np.uint32))},
                "epoch": 3}, legacy_state)
    lightning = tmp_path / "epoch=99.ckpt"  # with pickled Python objects, as Lightning writes them
    torch.save({"pytorch-lightning_version": "1.9.0", "state_dict": {"model.x": torch.zeros(1)},
                "hyper_parameters": {"cfg": _Recipe()}}, lightning)
    lightning_plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "optimizer_states": [], "epoch": 3},
               lightning_plain)
    hipt = tmp_path / "vit256_small_dino.pth"
    torch.save({"teacher": {"backbone.cls_token": torch.zeros(1)}}, hipt)
    return [(state, "training-state file .*pass the best.wsiseg or last.wsiseg"),
            (legacy_state, "training-state file"),
            (lightning, "PyTorch Lightning checkpoint .*wsiseg import-reference"),
            (lightning_plain, "PyTorch Lightning checkpoint"),
            (hipt, "HIPT checkpoint")]


def test_files_that_are_not_models_say_what_they_are(tmp_path: Path) -> None:
    for path, message in _not_models(tmp_path):
        with pytest.raises(CheckpointError, match=message) as info:
            load_model(path, device="cpu")
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_segment_with_a_training_state_as_model_is_one_line(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from wsiseg.cli import main
    from wsiseg.synthetic import write_synthetic_slide

    write_synthetic_slide(tmp_path / "s.svs", 512, 512, mpp=0.5, seed=1)
    state, _ = _not_models(tmp_path)[0]
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(tmp_path / "s.svs"), "--model", str(state), "--out", str(tmp_path / "s.zarr")])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and err.count("\n") == 1 and "Traceback" not in err
    assert "training-state file" in err and "best.wsiseg" in err


#: Three tiny models as wsiseg 0.1 wrote them (checkpoint format 1, layout v1): each file's content but its
#: tensors, which are refilled by key name, and the probabilities/IoUs wsiseg 0.1 itself predicted.
V1_MODELS = Path(__file__).parent / "data" / "v1_tiny_models.json"


def _v1_tensor(key: str, shape: list[int]) -> torch.Tensor:
    """The value the generator gave tensor ``key``: 0.05 N(0, 1) seeded by crc32 of the name (+1 for 1-d
    weights, the norms' scales)."""
    import zlib

    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    value = 0.05 * torch.randn(shape, generator=g)
    return value + 1.0 if key.endswith("weight") and len(shape) == 1 else value


@pytest.mark.parametrize("variant", ["sam_path", "sam_only", "pathology_only"])
def test_wsiseg_0_1_checkpoints_predict_what_wsiseg_0_1_predicted(tmp_path: Path, variant: str) -> None:
    import json

    entry = json.loads(V1_MODELS.read_text())["models"][variant]
    assert entry["meta"]["format_version"] == 1 and "layout" not in entry["meta"]["config"]
    state = {key: _v1_tensor(key, shape) for key, (shape, dtype) in entry["tensors"].items()}
    assert all(dtype == "torch.float32" for _, dtype in entry["tensors"].values())
    path = tmp_path / f"{variant}.wsiseg"
    torch.save({**entry["meta"], "state_dict": state}, path)
    predictor = load_model(path, device="cpu")
    assert predictor.model.config.layout.value == "v1"
    tiles = np.random.default_rng(0).integers(0, 256, (2, 80, 80, 3), dtype=np.uint8)
    probs, iou = predictor.predict_with_iou(tiles, 12)
    expected_probs, expected_iou = np.asarray(entry["probs"]), np.asarray(entry["iou"])
    assert np.abs(probs - expected_probs).max() < 1e-5, np.abs(probs - expected_probs).max()
    assert np.abs(iou - expected_iou).max() < 1e-5
    assert (probs.argmax(1) == expected_probs.argmax(1)).all()
