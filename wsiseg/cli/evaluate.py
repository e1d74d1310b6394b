"""``wsiseg evaluate``: micro and per-class Dice/IoU, confusion matrix and seconds per image.

``--method sampath`` (default) scores a ``.wsiseg`` model; ``sam-points`` and ``sam-everything`` score
the paper's vanilla-SAM baselines (:mod:`wsiseg.baselines`) through the same evaluation code.
"""

from __future__ import annotations

from pathlib import Path

import click

METHODS = ("sampath", "sam-points", "sam-everything")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--method", default="sampath", show_default=True, type=click.Choice(METHODS),
              help="sampath: a .wsiseg model. sam-points: vanilla SAM, one dot per ground-truth instance. "
                   "sam-everything: vanilla SAM's automatic mask generator (no classes).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path),
              help="sampath: a .wsiseg checkpoint (required).")
@click.option("--dataset", required=True, type=click.Choice(["bcss", "crag", "folder"]))
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "val", "test", "all"]))
@click.option("--class-map", type=click.Path(dir_okay=False, path_type=Path),
              help="folder: class-map file (default DATA/classes.yaml); its names match GeoJSON "
                   "classifications.")
@click.option("--mapping", type=click.Path(dir_okay=False, path_type=Path), help="bcss: class grouping file.")
@click.option("--patch-size", type=int, help="Patch side in pixels (default: the model's tile size; vanilla "
                                             "SAM: its input size).")
@click.option("--mpp", type=float, help="Resolution in um/px (default: the model's training mpp; vanilla "
                                        "SAM: the images' own).")
@click.option("--source-mpp", type=float, help="folder/crag: the images' own um/px.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/val split.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--sam-checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="Official SAM weights (e.g. sam_vit_b_01ec64.pth): the base of a slim .wsiseg model, "
                   "or vanilla SAM's weights for sam-points/sam-everything.")
@click.option("--sam-model", type=click.Choice(["vit_b", "vit_l", "vit_h", "tiny"]),
              help="sam-points/sam-everything: which SAM [default: recognised from --sam-checkpoint]; "
                   "tiny = a random test model.")
@click.option("--post-process", is_flag=True,
              help="sam-points/sam-everything: drop every predicted mask covering more than half of the "
                   "image (the paper's post-processing).")
@click.option("--points-per-side", type=int,
              help="sam-everything: the generator's grid of dots per side [default: 32].")
@click.option("--hipt-checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--save-predictions", type=click.Path(file_okay=False, path_type=Path),
              help="Write one colour PNG per patch here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report as JSON here.")
@click.option("--quiet", is_flag=True)
def command(method: str, model_path: Path | None, dataset: str, data_dir: Path, split: str,
            class_map: Path | None, mapping: Path | None, patch_size: int | None, mpp: float | None,
            source_mpp: float | None, val_fraction: float, seed: int, batch_size: int, device: str,
            sam_checkpoint: Path | None, sam_model: str | None, post_process: bool,
            points_per_side: int | None, hipt_checkpoint: Path | None, save_predictions: Path | None,
            json_path: Path | None, quiet: bool) -> None:
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
    if method != "sampath":
        _vanilla_sam(method, model_path, dataset, data_dir, split, class_map, mapping, patch_size, mpp,
                     source_mpp, val_fraction, seed, device, sam_checkpoint, sam_model, post_process,
                     points_per_side, hipt_checkpoint, save_predictions, json_path, quiet)
        return
    from wsiseg.errors import ConfigError

    misuse = [flag for flag, given in (("--post-process", post_process), ("--sam-model", sam_model),
                                       ("--points-per-side", points_per_side)) if given]
    if misuse:
        raise ConfigError(f"{misuse[0]} is for --method sam-points/sam-everything, not sampath")
    if model_path is None:
        raise ConfigError("--method sampath needs --model MODEL.wsiseg")
    from wsiseg.model import load_model
    from wsiseg.train.datasets import build_dataset
    from wsiseg.train.evaluate import evaluate

    predictor = load_model(model_path, device=device, sam_checkpoint=sam_checkpoint,
                           hipt_checkpoint=hipt_checkpoint)
    data = build_dataset(dataset, data_dir, split, patch_size=patch_size or predictor.tile_size,
                         mpp=mpp if mpp is not None else predictor.mpp, source_mpp=source_mpp,
                         val_fraction=val_fraction, seed=seed, class_map=class_map, mapping=mapping)
    report = evaluate(predictor, data, batch_size=batch_size, save_predictions=save_predictions, split=split,
                      progress=not quiet)
    click.echo(report.format())
    if json_path is not None:
        report.write_json(json_path)


def _vanilla_sam(method: str, model_path: Path | None, dataset: str, data_dir: Path, split: str,
                 class_map: Path | None, mapping: Path | None, patch_size: int | None, mpp: float | None,
                 source_mpp: float | None, val_fraction: float, seed: int, device: str,
                 sam_checkpoint: Path | None, sam_model: str | None, post_process: bool,
                 points_per_side: int | None, hipt_checkpoint: Path | None, save_predictions: Path | None,
                 json_path: Path | None, quiet: bool) -> None:
    """``--method sam-points|sam-everything``: vanilla SAM scored by the same evaluation as SAM-Path."""
    from wsiseg.errors import ConfigError

    if model_path is not None:
        raise ConfigError(f"--model is a SAM-Path checkpoint; {method} uses vanilla SAM: give its official "
                          "weights with --sam-checkpoint")
    if hipt_checkpoint is not None:
        raise ConfigError(f"--hipt-checkpoint is for SAM-Path; {method} uses vanilla SAM only")
    if points_per_side is not None and method != "sam-everything":
        raise ConfigError("--points-per-side is for --method sam-everything")
    if points_per_side is not None and points_per_side < 1:
        raise ConfigError(f"--points-per-side must be >= 1, got {points_per_side}")
    from wsiseg.baselines.evaluate import evaluate_sam_everything, evaluate_sam_points, format_baseline
    from wsiseg.baselines.instances import check_binary
    from wsiseg.baselines.sam import SamEverythingSegmenter, SamPointSegmenter, load_vanilla_sam
    from wsiseg.train.datasets import build_dataset

    # the data set first: a wrong data set fails before a large model is built
    default_size = 256 if sam_model == "tiny" else 1024  # SAM's input size
    data = build_dataset(dataset, data_dir, split, patch_size=patch_size or default_size,
                         mpp=mpp, source_mpp=source_mpp, val_fraction=val_fraction, seed=seed,
                         class_map=class_map, mapping=mapping)
    check_binary(data, method)
    sam, provenance = load_vanilla_sam(sam_model, sam_checkpoint, device)
    if method == "sam-points":
        report = evaluate_sam_points(SamPointSegmenter(sam, provenance), data, post_process=post_process,
                                     save_predictions=save_predictions, split=split, progress=not quiet)
    else:
        generator = SamEverythingSegmenter(sam, provenance, points_per_side=points_per_side or 32)
        report = evaluate_sam_everything(generator, data, post_process=post_process,
                                         save_predictions=save_predictions, split=split, progress=not quiet)
    click.echo(format_baseline(report))
    if json_path is not None:
        report.write_json(json_path)
