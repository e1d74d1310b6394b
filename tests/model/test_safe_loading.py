"""No file wsiseg reads can run code: a pickle that would create a marker file when unpickled is refused
(or read as inert data) by every reader, and the marker never appears."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from wsiseg.classes import ClassList
from wsiseg.errors import CheckpointError
from wsiseg.model import ModelConfig, SamPath, load_hipt_weights, load_model, load_sam_weights
from wsiseg.model.reference_import import read_reference_checkpoint
from wsiseg.model.torchfile import torch_load_inert


def _plant(path: Path, payload: Any) -> Path:
    torch.save(payload, path)
    return path


def test_the_planted_pickle_does_run_code_when_unpickled_plainly(tmp_path: Path, marker: Path,
                                                                 planted: object) -> None:
    """The control: a plain (unsafe) load of the planted file creates the marker."""
    path = _plant(tmp_path / "control.pt", {"x": planted})
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_wsiseg_checkpoint_refuses(tmp_path: Path, marker: Path, planted: object) -> None:
    path = _plant(tmp_path / "model.wsiseg", {"format": "wsiseg-checkpoint", "format_version": 2,
                                              "config": planted})
    with pytest.raises(CheckpointError,
                       match=r"not a readable wsiseg checkpoint: .*Unsupported global: GLOBAL io\.open"):
        load_model(path, device="cpu")
    assert not marker.exists()


def test_official_sam_and_hipt_files_refuse(tmp_path: Path, marker: Path, planted: object) -> None:
    model = SamPath(ModelConfig.from_preset("tiny", 2, input_size=64))
    sam = _plant(tmp_path / "sam_vit_b_01ec64.pth", {"image_encoder.pos_embed": planted})
    with pytest.raises(CheckpointError, match="not a readable Segment Anything checkpoint"):
        load_sam_weights(model, sam)
    hipt = _plant(tmp_path / "vit256_small_dino.pth", {"teacher": {}, "args": planted})
    with pytest.raises(CheckpointError, match="not a readable HIPT/DINO checkpoint"):
        load_hipt_weights(model, hipt)
    assert not marker.exists()


def test_reference_checkpoint_reads_planted_objects_as_inert_data(tmp_path: Path, marker: Path,
                                                                  planted: object) -> None:
    # anywhere in the file: as the whole file, inside hyper_parameters, inside the state_dict
    whole = _plant(tmp_path / "a.ckpt", planted)
    with pytest.raises(CheckpointError, match="not a PyTorch Lightning checkpoint"):
        read_reference_checkpoint(whole, ClassList.from_names(["a", "b"]))
    inside = _plant(tmp_path / "b.ckpt", {"state_dict": {"model.x": planted},
                                          "hyper_parameters": {"cfg": planted}})
    with pytest.raises(CheckpointError, match="not a mapping of tensors"):
        read_reference_checkpoint(inside, ClassList.from_names(["a", "b"]))
    obj = torch_load_inert(inside, "test file")
    assert repr(obj["hyper_parameters"]["cfg"]) == "<inert io.open>"
    assert obj["hyper_parameters"]["cfg"].args == (str(marker), "w")
    assert not marker.exists()
