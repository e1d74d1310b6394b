"""``wsiseg import-reference``: a model trained with the SAM-Path reference code -> a ``.wsiseg`` file."""

from __future__ import annotations

from pathlib import Path

import click

from wsiseg.errors import ConfigError

#: resolution (um/px) and tile side (pixels) each paper data set was trained at
DATASET_GRID = {"bcss": (0.25, 1024), "crag": (0.5, 1536)}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dataset", type=click.Choice(["bcss", "crag"]),
              help="The data set it was trained on: its classes (in the reference's channel order), "
                   "resolution and tile size.")
@click.option("--classes", "class_names", metavar="A,B,...",
              help="Class names in the reference's channel order 1..k (instead of --dataset).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .wsiseg file to write.")
@click.option("--mpp", type=float, help="Resolution it was trained at, um/px [bcss 0.25, crag 0.5].")
@click.option("--tile-size", type=int, help="Tile side in pixels at --mpp [bcss 1024, crag 1536].")
def command(checkpoint: Path, dataset: str | None, class_names: str | None, out: Path, mpp: float | None,
            tile_size: int | None) -> None:
    """Import CHECKPOINT, a PyTorch Lightning .ckpt written by the SAM-Path reference code
    (cvlab-stonybrook/SAMPath: SAM-Path or "Fine-tuned SAM"), as a self-contained .wsiseg model that
    computes exactly what the reference computes. Nothing in the file is executed: its pickled
    configuration objects are read as inert data.

    Example: wsiseg import-reference epoch=31.ckpt --dataset bcss --out bcss.wsiseg
    """
    from wsiseg.classes import ClassList
    from wsiseg.model.reference_import import import_reference_checkpoint

    if (dataset is None) == (class_names is None):
        raise ConfigError("give the classes with --dataset bcss|crag or --classes NAME,NAME,... "
                          "(one of them)")
    if dataset == "bcss":
        from wsiseg.train.datasets.bcss import DEFAULT_COLORS, DEFAULT_GROUPS, grouping_lut

        classes = grouping_lut(DEFAULT_GROUPS, DEFAULT_COLORS)[0]
    elif dataset == "crag":
        from wsiseg.train.datasets.crag import CLASSES as classes
    else:
        assert class_names is not None
        classes = ClassList.from_names([n.strip() for n in class_names.split(",") if n.strip()])
    default_mpp, default_tile = DATASET_GRID.get(dataset or "", (None, 1024))
    ref = import_reference_checkpoint(checkpoint, out, classes=classes,
                                      mpp=mpp if mpp is not None else default_mpp,
                                      tile_size=tile_size or default_tile)
    click.echo(f"imported {ref.variant.value} ({len(classes)} classes: {', '.join(classes.names)}; epoch "
               f"{ref.epoch}) -> {out}")
