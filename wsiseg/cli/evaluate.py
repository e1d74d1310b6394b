"""``wsiseg evaluate``: micro and per-class Dice/IoU, confusion matrix and seconds per image."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_spec", metavar="NAME|CKPT",
              help="A registered model name or a .wsiseg checkpoint [default: $WSISEG_MODEL, else the "
                   "registry's default model].")
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
@click.option("--paper-convention", type=click.Choice(["bcss", "crag"]),
              help="How the paper's numbers are computed: crag leaves background out (gland Dice, gland "
                   "recall as 'IoU') [default: crag for --dataset crag, else bcss].")
@click.option("--patch-size", type=int, help="Patch side in pixels (default: the model's tile size).")
@click.option("--mpp", type=float, help="Resolution in um/px (default: the model's training mpp).")
@click.option("--source-mpp", type=float, help="folder/crag: the images' own um/px.")
@click.option("--val-fraction", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/val split.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--sam-checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="Official SAM weights a slim checkpoint needs [default: the registered file].")
@click.option("--hipt-checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="HIPT weights a slim checkpoint needs [default: the registered file].")
@click.option("--save-predictions", type=click.Path(file_okay=False, path_type=Path),
              help="Write one colour PNG per patch here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report as JSON here.")
@click.option("--quiet", is_flag=True)
def command(model_spec: str | None, dataset: str, data_dir: Path | None, split: str, class_map: Path | None,
            mapping: Path | None, split_file: Path | None, whole_image: bool | None,
            paper_convention: str | None, patch_size: int | None, mpp: float | None, source_mpp: float | None,
            val_fraction: float, seed: int, batch_size: int, device: str, sam_checkpoint: Path | None,
            hipt_checkpoint: Path | None, save_predictions: Path | None, json_path: Path | None,
            quiet: bool) -> None:
    """Score a model on a data set split (micro Dice/IoU as in the SAM-Path paper, plus per class).

    \b
    folder data sets: DATA/images/<name>.png|jpg|tif with DATA/masks/<name>.png (mask values mapped by
    the class map) or DATA/masks/<name>.geojson|.json|.geojson.gz (e.g. QuPath "Export objects as
    GeoJSON": polygons in the image's pixel coordinates, classification names = class names of the
    class map; pixels no polygon covers are not scored). Layouts: docs/datasets.md.
    """
    from wsiseg.model import load_model
    from wsiseg.registry import find_data_dir, resolve_model
    from wsiseg.train.datasets import build_dataset
    from wsiseg.train.evaluate import evaluate
    from wsiseg.train.metrics import PaperConvention

    data_dir = find_data_dir(dataset, data_dir)
    model = resolve_model(model_spec, sam_checkpoint=sam_checkpoint, hipt_checkpoint=hipt_checkpoint)
    predictor = load_model(model.path, device=device, sam_checkpoint=model.sam_checkpoint,
                           hipt_checkpoint=model.hipt_checkpoint)
    recipe = predictor.provenance().get("trained", {}).get("training", {}).get("recipe", {})
    if whole_image is None:
        whole_image = bool(recipe.get("whole_image", False)) and dataset == recipe.get("dataset")
    data = build_dataset(dataset, data_dir, split, patch_size=patch_size or predictor.tile_size,
                         mpp=None if whole_image else (mpp if mpp is not None else predictor.mpp),
                         source_mpp=source_mpp, val_fraction=val_fraction, seed=seed, class_map=class_map,
                         mapping=mapping, split_file=split_file, whole_image=whole_image or None)
    report = evaluate(predictor, data, batch_size=batch_size, save_predictions=save_predictions, split=split,
                      progress=not quiet,
                      paper=PaperConvention(paper_convention) if paper_convention else None)
    click.echo(report.format())
    if json_path is not None:
        report.write_json(json_path)
