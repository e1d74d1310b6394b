"""Fixtures for the slide tests: small synthetic slides (written once per session) and a blank slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile


@pytest.fixture(scope="session")
def blank_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1024x1024 pyramidal generic TIFF of glass only (near-white with sensor noise), 0.5 um/px."""
    path = tmp_path_factory.mktemp("blank") / "blank.tiff"
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(242, 2.0, (1024, 1024, 3)), 0, 255).astype(np.uint8)
    with tifffile.TiffWriter(path) as tif:
        for level, image in enumerate((glass, glass[::2, ::2], glass[::4, ::4])):
            tif.write(image, photometric="rgb", compression="jpeg", tile=(256, 256), metadata=None,
                      resolution=(1e4 / (0.5 * 2**level),) * 2, resolutionunit="CENTIMETER",
                      subfiletype=1 if level else 0)
    return path
