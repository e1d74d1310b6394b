"""A pathology foundation model as Fp through the whole product, as a user runs it: its published file
registered once (`wsiseg models add-base`), `wsiseg train --pathology-encoder` (with the embedding cache),
then `wsiseg segment` on a slide with the slim model that needs the file again (found by sha256)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsiseg.infer import open_segmentation
from wsiseg.io.hashing import file_sha256
from wsiseg.model import ModelConfig, TokenGrid, read_checkpoint
from wsiseg.recipes import find_recipe
from wsiseg.synthetic import write_synthetic_slide
from wsiseg.train.config import TrainConfig

from .model.test_foundation_encoders import official_file
from .test_readme_commands import _cli, user  # noqa: F401  (the fixture)


@pytest.mark.parametrize(("encoder", "grid"), [("uni", "resize_input"), ("virchow2", "resample_features")])
def test_register_train_and_segment(user: Path, encoder: str, grid: str,  # noqa: F811
                                    capsys: pytest.CaptureFixture[str]) -> None:
    weights, _ = official_file(user, encoder, "safetensors")
    code, out, err = _cli(["models", "add-base", str(weights)], capsys)
    assert code == 0 and f"({encoder}_tiny)" in out, err

    code, _, err = _cli(["train", "--dataset", "bcss", "--preset", "tiny", "--pathology-encoder",
                         f"{encoder}_tiny", "--token-grid", grid, "--epochs", "1", "--patch-size", "32",
                         "--input-size", "64", "--batch-size", "8", "--accumulate", "1", "--num-workers", "0",
                         "--device", "cpu", "--cache-embeddings", "cache", "--out", "run", "--quiet"], capsys)
    assert code == 0, err
    assert f"using the registered Fp weights {weights}" in err
    ckpt = read_checkpoint(Path("run/best.wsiseg"))
    assert ckpt.config.hipt == f"{encoder}_tiny" and ckpt.config.token_grid is TokenGrid(grid)
    assert ckpt.base["hipt"]["sha256"] == file_sha256(weights)  # slim: the file is needed again
    assert not any(k.startswith("pathology_encoder.") for k in ckpt.state_dict)
    assert ckpt.state_dict["reduction.layers.0.weight"].shape[1] == 64 + 48  # sam_tiny + the Fp's width
    cached = sorted(Path("cache").rglob("*.npy"))
    assert cached and np.load(cached[0]).shape == (64 + 48, 4, 4)  # Fs and Fp features, G = 64 / 16

    write_synthetic_slide(Path("slide.svs"), 512, 512, mpp=0.5, seed=2)
    code, _, err = _cli(["segment", "slide.svs", "--out", "slide.zarr", "--model", "run/best.wsiseg",
                         "--quiet"], capsys)
    assert code == 0, err
    seg = open_segmentation(Path("slide.zarr"))
    assert seg.finished
    assert seg.metadata.model["config"]["hipt"] == f"{encoder}_tiny"


def test_segment_without_the_fp_file_is_one_line(user: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
                                                 ) -> None:
    weights, _ = official_file(user, "uni", "bin")
    code, _, err = _cli(["train", "--dataset", "bcss", "--preset", "tiny", "--pathology-encoder", "uni_tiny",
                         "--pathology-checkpoint", str(weights), "--epochs", "1", "--patch-size", "32",
                         "--input-size", "64", "--batch-size", "8", "--accumulate", "1", "--num-workers", "0",
                         "--device", "cpu", "--out", "run", "--quiet"], capsys)
    assert code == 0, err
    weights.unlink()
    write_synthetic_slide(Path("slide.svs"), 256, 256, mpp=0.5, seed=2)
    code, _, err = _cli(["segment", "slide.svs", "--out", "s.zarr", "--model", "run/best.wsiseg", "--quiet"],
                        capsys)
    assert code != 0 and err.count("\n") == 1 and "uni.bin" in err, err


@pytest.mark.parametrize("recipe", ["bcss-uni", "crag-uni", "bcss-h-optimus-0", "crag-h-optimus-0"])
def test_foundation_recipes(recipe: str) -> None:
    import torch

    from wsiseg.model import SamPath

    cfg = TrainConfig.from_file(find_recipe(recipe))
    paper = TrainConfig.from_file(find_recipe(recipe.split("-")[0]))
    assert cfg.pathology_encoder in ("uni", "h_optimus_0")
    fields = TrainConfig.keys()
    differs = {k for k in fields if getattr(cfg, k) != getattr(paper, k)}
    assert differs == {"pathology_encoder"}  # everything else is the paper's recipe
    with torch.device("meta"):
        model = SamPath(ModelConfig.from_preset(cfg.preset, 5, pathology_encoder=cfg.pathology_encoder,
                                                token_grid=cfg.token_grid))
    assert model.reduction is not None
    assert model.reduction.layers[0].in_channels == 768 + (1024 if cfg.pathology_encoder == "uni" else 1536)
