"""The README's no-download demo: trains, segments, exports and scores against exact ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_learns_the_synthetic_classes(tmp_path: Path) -> None:
    import torch

    from wsiseg.demo import run_demo

    torch.set_num_threads(1)
    result = run_demo(tmp_path / "demo", progress=False, log=lambda _line: None)
    # measured 0.93 micro Dice (every class > 0.85) after the default 12 epochs
    assert result.micro_dice > 0.85, result.dice
    assert min(result.dice.values()) > 0.7, result.dice
    scores = json.loads((tmp_path / "demo" / "scores.json").read_text())
    assert scores["micro_dice"] == pytest.approx(result.micro_dice)
    assert result.model.is_file() and result.preview is not None and result.preview.is_file()
    features = json.loads(result.geojson.read_text())["features"]
    assert {f["properties"]["classification"]["name"] for f in features} <= set(result.dice)
    again = run_demo(tmp_path / "demo", progress=False, log=lambda _line: None)  # a rerun is not an error
    assert again.skipped and "skipped (finished before" in again.summary()
    assert again.micro_dice == pytest.approx(result.micro_dice) and again.dice == pytest.approx(result.dice)
