"""``wsiseg evaluate``: micro and per-class Dice/IoU, the paper's numbers, confusion matrix, s/image.

``--method sampath`` (default) scores a ``.wsiseg`` model; ``sam-points`` and ``sam-everything`` score
the paper's vanilla-SAM baselines (:mod:`wsiseg.baselines`) through the same evaluation code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsiseg.cli import options
from wsiseg.errors import ConfigError

METHODS = ("sampath", "sam-points", "sam-everything")
#: data-set flags passed through to ``build_dataset``
_DATA_KEYS = ("class_map", "mapping", "split_file", "source_mpp", "val_fraction", "seed")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--method", default="sampath", show_default=True, type=click.Choice(METHODS),
              help="sampath: a .wsiseg model. sam-points: vanilla SAM, one dot per ground-truth instance. "
                   "sam-everything: vanilla SAM's automatic mask generator (no classes).")
@click.option("--model", "model_spec", metavar="NAME|CKPT",
              help="sampath: a registered model name or a .wsiseg checkpoint [default: $WSISEG_MODEL, "
                   "else the registry's default model].")
@click.option("--dataset", required=True, type=click.Choice(["bcss", "crag", "folder"]))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data set folder [default: $WSISEG_DATA/<dataset> when it exists].")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "val", "test", "all"]))
@click.option("--class-map", type=click.Path(dir_okay=False, path_type=Path),
              help="folder: class-map file (default DATA/classes.yaml); its names match GeoJSON "
                   "classifications.")
@click.option("--mapping", type=click.Path(dir_okay=False, path_type=Path), help="bcss: class grouping file.")
@click.option("--split-file", type=click.Path(dir_okay=False, path_type=Path),
              help="bcss/crag: an img_id,fold CSV (fold -1 test, 0 val, 1.. train), e.g. the reference "
                   "code's.")
@click.option("--whole-image/--patches", default=None,
              help="crag: whole images resized to the model's tile size (the paper's set-up) or patches "
                   "[default: as the model was trained].")
@click.option("--per-image/--per-patch", default=False, show_default=True,
              help="sampath on patch data sets: predict all patches of each image, average their class "
                   "probabilities where they overlap and count every image pixel once (the whole-image "
                   "figure usual for GlaS); --per-patch scores each patch on its own, so pixels in the "
                   "overlap of two patches count twice (the reference code's way, for BCSS).")
@click.option("--paper-convention", type=click.Choice(["bcss", "crag"]),
              help="How the paper's numbers are computed: crag leaves background out (gland Dice, gland "
                   "recall as 'IoU') [default: crag for --dataset crag, else bcss].")
@click.option("--patch-size", type=int, help="Patch side in pixels (default: the model's tile size; vanilla "
                                             "SAM: its input size).")
@click.option("--mpp", type=float, help="Resolution in um/px (default: the model's training mpp; vanilla "
                                        "SAM: the images' own).")
@click.option("--source-mpp", type=float, help="folder/crag: the images' own um/px.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/val split.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@options.device()
@options.sam_checkpoint("the base of a slim .wsiseg model [default: the registered file], or vanilla "
                        "SAM's weights for sam-points/sam-everything.")
@click.option("--sam-model", type=click.Choice(["vit_b", "vit_l", "vit_h", "tiny"]),
              help="sam-points/sam-everything: which SAM [default: recognised from --sam-checkpoint]; "
                   "tiny = a random test model.")
@click.option("--post-process", is_flag=True,
              help="sam-points/sam-everything: drop every predicted mask covering more than half of the "
                   "image (the paper's post-processing).")
@click.option("--points-per-side", type=int,
              help="sam-everything: the generator's grid of dots per side [default: 32].")
@options.hipt_checkpoint("the base a slim checkpoint needs [default: the registered file].")
@click.option("--save-predictions", type=click.Path(file_okay=False, path_type=Path),
              help="Write one colour PNG per patch (per image with --per-image) here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report as JSON here.")
@options.quiet()
def command(method: str, dataset: str, data_dir: Path | None, split: str, json_path: Path | None,
            **flags: Any) -> None:
    """Score a model on a data set split (micro Dice/IoU as in the SAM-Path paper, plus per class).

    \b
    folder data sets: DATA/images/<name>.png|jpg|tif with DATA/masks/<name>.png (mask values mapped by
    the class map) or DATA/masks/<name>.geojson|.json|.geojson.gz (e.g. QuPath "Export objects as
    GeoJSON": polygons in the image's pixel coordinates, classification names = class names of the
    class map; pixels no polygon covers are not scored). Layouts: docs/datasets.md.

    \b
    The paper's vanilla-SAM baselines (two-class data sets: crag, or a folder such as GlaS):
      --method sam-points --sam-checkpoint sam_vit_b_01ec64.pth [--post-process]
      --method sam-everything --sam-checkpoint sam_vit_b_01ec64.pth
    Compare report files side by side with `wsiseg compare`.
    """
    from wsiseg.registry import find_data_dir

    data_dir = find_data_dir(dataset, data_dir)
    options = {k: flags[k] for k in _DATA_KEYS}
    report = (_sampath if method == "sampath" else _vanilla_sam)(method, dataset, data_dir, split, options,
                                                                 flags)
    if json_path is not None:
        report.write_json(json_path)


def _sampath(method: str, dataset: str, data_dir: Path, split: str, options: dict[str, Any],
             flags: dict[str, Any]) -> Any:
    """``--method sampath``: a .wsiseg model (registered name, path, or the default)."""
    misuse = [flag for flag, key in (("--post-process", "post_process"), ("--sam-model", "sam_model"),
                                     ("--points-per-side", "points_per_side")) if flags[key]]
    if misuse:
        raise ConfigError(f"{misuse[0]} is for --method sam-points/sam-everything, not sampath")
    from wsiseg.model import load_model
    from wsiseg.registry import resolve_model
    from wsiseg.train.evaluate import Scoring, dataset_for, evaluate
    from wsiseg.train.metrics import PaperConvention

    model = resolve_model(flags["model_spec"], sam_checkpoint=flags["sam_checkpoint"],
                          hipt_checkpoint=flags["hipt_checkpoint"])
    predictor = load_model(model.path, device=flags["device"], sam_checkpoint=model.sam_checkpoint,
                           hipt_checkpoint=model.hipt_checkpoint)
    data = dataset_for(predictor, dataset, data_dir, split, patch_size=flags["patch_size"], mpp=flags["mpp"],
                       whole_image=flags["whole_image"], **options)
    convention = flags["paper_convention"]
    report = evaluate(predictor, data, batch_size=flags["batch_size"],
                      save_predictions=flags["save_predictions"], split=split, progress=not flags["quiet"],
                      paper=PaperConvention(convention) if convention else None,
                      scoring=Scoring.IMAGES if flags["per_image"] else Scoring.PATCHES)
    click.echo(report.format())
    return report


def _vanilla_sam(method: str, dataset: str, data_dir: Path, split: str, options: dict[str, Any],
                 flags: dict[str, Any]) -> Any:
    """``--method sam-points|sam-everything``: vanilla SAM scored by the same evaluation as SAM-Path."""
    if flags["per_image"]:
        raise ConfigError(f"--per-image is for --method sampath; {method} prompts and scores each patch")
    if flags["model_spec"] is not None:
        raise ConfigError(f"--model is a SAM-Path checkpoint; {method} uses vanilla SAM: give its official "
                          "weights with --sam-checkpoint")
    if flags["hipt_checkpoint"] is not None:
        raise ConfigError(f"--hipt-checkpoint is for SAM-Path; {method} uses vanilla SAM only")
    points_per_side = flags["points_per_side"]
    if points_per_side is not None and method != "sam-everything":
        raise ConfigError("--points-per-side is for --method sam-everything")
    if points_per_side is not None and points_per_side < 1:
        raise ConfigError(f"--points-per-side must be >= 1, got {points_per_side}")
    from wsiseg.baselines.evaluate import evaluate_sam_everything, evaluate_sam_points, format_baseline
    from wsiseg.baselines.instances import check_binary
    from wsiseg.baselines.sam import SamEverythingSegmenter, SamPointSegmenter, load_vanilla_sam
    from wsiseg.train.datasets import build_dataset

    # the data set first: a wrong data set fails before a large model is built
    default_size = 256 if flags["sam_model"] == "tiny" else 1024  # SAM's input size
    data = build_dataset(dataset, data_dir, split, patch_size=flags["patch_size"] or default_size,
                         mpp=flags["mpp"], whole_image=flags["whole_image"] or None, **options)
    check_binary(data, method)
    sam, provenance = load_vanilla_sam(flags["sam_model"], flags["sam_checkpoint"], flags["device"])
    common = {"post_process": flags["post_process"], "save_predictions": flags["save_predictions"],
              "split": split, "progress": not flags["quiet"]}
    if method == "sam-points":
        report = evaluate_sam_points(SamPointSegmenter(sam, provenance), data, **common)
    else:
        generator = SamEverythingSegmenter(sam, provenance, points_per_side=points_per_side or 32)
        report = evaluate_sam_everything(generator, data, **common)
    click.echo(format_baseline(report))
    return report
