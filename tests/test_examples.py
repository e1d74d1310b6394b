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


def test_objects_and_measurements_example(tmp_path: Path) -> None:
    script = REPO / "examples" / "objects_and_measurements.py"
    figure = tmp_path / "objects.png"
    result = subprocess.run([sys.executable, str(script), str(tmp_path), str(figure)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r"(\d+) inflammatory objects >= 50 um\^2", result.stdout)
    truth = re.search(r"ground truth: (\d+) inflammatory regions", result.stdout)
    assert found is not None and truth is not None, result.stdout
    assert abs(int(found[1]) - int(truth[1])) <= 2  # the colour oracle, errors only along class borders
    assert (tmp_path / "inflammatory.objects.csv").is_file() and figure.stat().st_size > 10_000
