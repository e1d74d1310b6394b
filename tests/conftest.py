"""Shared test fixtures: the real data in ../shared (skipped when absent) and CPU-friendly torch settings."""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from wsiseg.synthetic import SyntheticTruth

os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("WSISEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never see the developer's model registry or WSISEG_MODEL/WSISEG_DATA (tests that need a
    registry point WSISEG_HOME at their own folder)."""
    monkeypatch.setenv("WSISEG_HOME", str(tmp_path_factory.getbasetemp() / "wsiseg-home"))
    for var in ("WSISEG_MODEL", "WSISEG_DATA"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that use it are skipped cleanly where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cmu_small_region(shared_data: Path) -> Path:
    path = shared_data / "slides" / "CMU-1-Small-Region.svs"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def glas_dir(shared_data: Path) -> Path:
    path = shared_data / "glas"
    if not (path / "images").is_dir():
        pytest.skip(f"{path} not found")
    return path


#: ``folder_subset(src, names, dst)``: see :func:`folder_subset`
FolderSubset = Callable[[Path, list[str], Path], Path]


@pytest.fixture
def folder_subset() -> FolderSubset:
    """Makes a folder data set ``dst`` of the image/label pairs ``names`` of the folder data set ``src``
    (``images/`` and ``labels/``; symlinks, nothing copied) and returns ``dst``."""

    def make(src: Path, names: list[str], dst: Path) -> Path:
        for sub in ("images", "labels"):
            (dst / sub).mkdir(parents=True)
            for name in names:
                (dst / sub / name).symlink_to(src / sub / name)
        return dst

    return make


@pytest.fixture(scope="session")
def glas_full(shared_data: Path) -> Path:
    """``glas-full/`` with ``train/`` (85 GlaS training pairs) and ``testA/`` (60 Test A pairs)."""
    path = shared_data / "glas-full"
    if not all((path / split / "images").is_dir() for split in ("train", "testA")):
        pytest.skip(f"{path}/train or {path}/testA not found")
    return path


class Planted:
    """A pickle payload: unpickling it calls ``open(marker, "w")``, creating the marker file (tests that no
    reader of wsiseg ever runs code from a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return builtins.open, (str(self.marker), "w")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """Where a :class:`Planted` payload would create its file."""
    return tmp_path / "PWNED"


@pytest.fixture
def planted(marker: Path) -> Planted:
    return Planted(marker)


@pytest.fixture(scope="session")
def tiny_official_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"sam", "hipt"}``: files in the official SAM / HIPT (DINO) layouts, sized for the tiny presets
    (random values), as `wsiseg models add-base` and ``--sam-checkpoint``/``--hipt-checkpoint`` take them."""
    import torch

    from .model.conftest import dino_checkpoint, sam_state_dict

    d = tmp_path_factory.mktemp("tiny_official")
    files = {"sam": d / "sam_tiny_official.pth", "hipt": d / "hipt_tiny_official.pth"}
    torch.save(sam_state_dict("tiny", seed=7), files["sam"])
    torch.save(dino_checkpoint(48, 2, seed=8)[0], files["hipt"])
    return files


@pytest.fixture(scope="session")
def slim_tiny_model(tiny_official_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slim tiny SAM-Path checkpoint built from :func:`tiny_official_files` (it needs both again): the
    5 synthetic-slide classes, 2 um/px, 128 px tiles, model input 64 px."""
    import torch

    from wsiseg.model import ModelConfig, SamPath, load_hipt_weights, load_sam_weights, save_checkpoint
    from wsiseg.synthetic import SYNTHETIC_CLASSES

    torch.manual_seed(0)
    model = SamPath(ModelConfig.from_preset("tiny", len(SYNTHETIC_CLASSES), input_size=64))
    load_sam_weights(model, tiny_official_files["sam"])
    load_hipt_weights(model, tiny_official_files["hipt"])
    path = tmp_path_factory.mktemp("slim_tiny") / "tiny-slim.wsiseg"
    return save_checkpoint(model, path, classes=SYNTHETIC_CLASSES, mpp=2.0, tile_size=128)


@pytest.fixture(scope="session")
def synthetic_svs(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruth:
    """A 2048x1536 Aperio-like synthetic slide at 0.5 um/px (levels at downsample 1 and 4)."""
    from wsiseg.synthetic import SlideLayout, write_synthetic_slide

    return write_synthetic_slide(tmp_path_factory.mktemp("svs") / "synthetic.svs", 2048, 1536, mpp=0.5,
                                 layout=SlideLayout.SVS, seed=1)


@pytest.fixture(scope="session")
def synthetic_tiff(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruth:
    """A 1800x1300 generic tiled TIFF at 0.25 um/px (levels at downsample 1, 2, 4; odd sizes on purpose)."""
    from wsiseg.synthetic import SlideLayout, write_synthetic_slide

    return write_synthetic_slide(tmp_path_factory.mktemp("tiff") / "synthetic.tiff", 1800, 1300, mpp=0.25,
                                 layout=SlideLayout.TIFF, seed=2)
