"""The built-in demo: the whole product on synthetic slides, with no downloads and no GPU.

:func:`run_demo` writes three small synthetic training slides, cuts them into a folder data set, fine-tunes
the ``tiny`` SAM-Path preset from an embedding cache, segments a fourth (unseen) synthetic slide into an
OME-Zarr with a preview PNG, exports QuPath GeoJSON, and scores the segmentation against the slide's exact
ground truth. Everything lands in one output folder; on 2 CPU cores it takes a few minutes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsiseg.errors import OutputError, option
from wsiseg.synthetic.patches import DEMO_MPP, DEMO_PATCH, SLIDE_MPP, write_synthetic_patch_folder


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its outputs and how well it did (Dice against the exact ground truth)."""

    out_dir: Path
    model: Path
    segmentation: Path
    preview: Path | None
    geojson: Path
    micro_dice: float
    dice: dict[str, float]
    seconds: float
    skipped: bool = False  #: finished before: nothing was run, the scores are the stored ones

    def summary(self) -> str:
        per_class = ", ".join(f"{k} {v:.3f}" for k, v in self.dice.items())
        when = (f"skipped (finished before; {option('overwrite', flag=True)} runs it again)" if self.skipped
                else f"finished in {self.seconds:.0f} s")
        return (f"demo {when}: micro Dice {self.micro_dice:.3f} against the exact "
                f"ground truth ({per_class}); outputs in {self.out_dir}")


def _finished_demo(out: Path) -> DemoResult:
    """The result of a demo that finished before, from its ``scores.json``."""
    scores_path = out / "scores.json"
    try:
        scores = json.loads(scores_path.read_text())
        dice = {name: float(v["dice"]) for name, v in scores["per_class"].items()}
        micro = float(scores["micro_dice"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"{scores_path} is damaged ({exc}); "
                          f"pass {option('overwrite', flag=True)} to run the demo again") from exc
    preview = out / "slide.preview.png"
    return DemoResult(out, out / "run" / "best.wsiseg", out / "slide.zarr",
                      preview if preview.exists() else None, out / "slide.geojson", micro, dice, 0.0,
                      skipped=True)


def run_demo(out_dir: Path | str, *, epochs: int = 12, overwrite: bool = False, progress: bool = True,
             log: Callable[[str], Any] = print) -> DemoResult:
    """Train, segment, export and score on synthetic slides; see the module docstring.

    ``out_dir`` receives ``data/`` (training patches), ``run/`` (``best.wsiseg``, metrics, curves.png),
    ``slide.svs`` (the unseen test slide), ``slide.zarr`` (+ ``slide.preview.png``), ``slide.geojson`` and
    ``scores.json``. A finished demo is not run again unless ``overwrite``: its stored result comes back
    with ``skipped=True``.
    """
    from wsiseg.export import export_geojson
    from wsiseg.infer import open_segmentation, segment_slide
    from wsiseg.model import load_model
    from wsiseg.synthetic import SYNTHETIC_CLASSES, write_synthetic_slide
    from wsiseg.train.config import TrainConfig
    from wsiseg.train.datasets import build_dataset
    from wsiseg.train.metrics import ConfusionMatrix
    from wsiseg.train.trainer import Trainer

    start = time.perf_counter()
    out = Path(out_dir)
    scores_path = out / "scores.json"
    if scores_path.exists() and not overwrite:
        return _finished_demo(out)
    out.mkdir(parents=True, exist_ok=True)

    data = out / "data"
    if not (data / "classes.yaml").exists():
        log(f"1/5 writing synthetic training slides and cutting {DEMO_PATCH}px patches at {DEMO_MPP} um/px")
        write_synthetic_patch_folder(data, seeds=(1, 2, 3))
    config = TrainConfig(
        dataset="folder", data_dir=str(data), class_map=str(data / "classes.yaml"), patch_size=DEMO_PATCH,
        mpp=DEMO_MPP, source_mpp=DEMO_MPP, preset="tiny", epochs=epochs, batch_size=8, accumulate=1, lr=1e-3,
        warmup=1, milestones=[epochs * 0.75], out_dir=str(out / "run"),
        cache_embeddings=str(out / "cache"), num_workers=0, seed=0,
    )
    options: dict[str, Any] = {"patch_size": DEMO_PATCH, "mpp": DEMO_MPP, "source_mpp": DEMO_MPP,
                               "val_fraction": config.val_fraction, "seed": 0,
                               "class_map": config.class_map, "mapping": None}
    train_set = build_dataset("folder", data, "train", **options)
    val_set = build_dataset("folder", data, "val", **options)
    log(f"2/5 training the tiny SAM-Path preset on {len(train_set)} patches ({epochs} epochs, cached "
        "encoder features)")
    trained = Trainer(config, train_set, val_set, progress=progress).fit()
    model_path = trained.out_dir / "best.wsiseg"

    log("3/5 segmenting an unseen synthetic slide")
    slide_path = out / "slide.svs"
    truth = write_synthetic_slide(slide_path, 4096, 4096, mpp=SLIDE_MPP, seed=42)
    predictor = load_model(model_path, device="cpu")
    seg_path = out / "slide.zarr"
    result = segment_slide(slide_path, predictor, seg_path, overwrite=True, progress=progress)

    log("4/5 exporting QuPath GeoJSON")
    geojson_path = out / "slide.geojson"
    export_geojson(seg_path, geojson_path)

    log("5/5 scoring against the exact ground truth")
    seg = open_segmentation(seg_path)
    predicted = np.asarray(seg.labels[0][:, :]).astype(np.int64) - 1  # -1 = not analysed
    expected = truth.labels(seg.mpp[0])[: predicted.shape[0], : predicted.shape[1]]
    analysed = predicted >= 0
    matrix = ConfusionMatrix(SYNTHETIC_CLASSES)
    matrix.update(predicted[analysed], expected[analysed])
    scores = matrix.scores()
    dice = {name: float(d) for name, d in zip(scores.class_names, scores.dice, strict=True)}
    scores_path.write_text(json.dumps({"segmentation": str(seg_path), **scores.to_dict()}, indent=2))
    return DemoResult(out, model_path, seg_path, result.preview, geojson_path, float(scores.micro_dice), dice,
                      time.perf_counter() - start)
