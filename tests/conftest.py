"""Shared test fixtures: the real data in ../shared (skipped when absent) and CPU-friendly torch settings."""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("WSISEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


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
