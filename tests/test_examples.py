"""The runnable walkthroughs in examples/ keep working and give the figures they print."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_segment_synthetic_slide_example(tmp_path: Path) -> None:
    script = REPO / "examples" / "segment_synthetic_slide.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r"pixel accuracy against the exact ground truth: ([0-9.]+)", result.stdout)
    assert match is not None, result.stdout
    accuracy = float(match[1])
    assert accuracy > 0.95  # the colour oracle at 1 um/px; errors only along class borders
    assert (tmp_path / "synthetic.zarr").is_dir() and (tmp_path / "synthetic.geojson").stat().st_size > 1000
