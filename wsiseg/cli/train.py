"""``wsiseg train``: fine-tune SAM-Path on BCSS, CRAG or a folder of image/mask pairs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from wsiseg.cli import options
from wsiseg.errors import ConfigError

if TYPE_CHECKING:
    from wsiseg.train.config import TrainConfig

_FLAG_KEYS = (
    "dataset", "data_dir", "class_map", "mapping", "split_file", "patch_size", "mpp", "source_mpp",
    "val_fraction",
    "preset", "variant", "pathology_encoder", "token_grid", "input_size", "sam_checkpoint", "hipt_checkpoint",
    "epochs", "batch_size",
    "accumulate", "lr", "weight_decay", "alpha", "beta", "seed", "device", "amp", "num_workers", "out_dir",
    "cache_embeddings",
)


def _with_base_weights(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the SAM/HIPT files its preset's encoders load: the recipe's or the flags', else those
    registered for the encoder presets (`wsiseg models add-base`). Full-size frozen encoders without
    official weights raise ConfigError (one line: which files, how to give them, the CPU try-out)."""
    from wsiseg.model import ModelConfig
    from wsiseg.registry import training_weights

    model = ModelConfig.from_preset(cfg.preset, 1, variant=cfg.variant, input_size=cfg.input_size,
                                    pathology_encoder=cfg.pathology_encoder, token_grid=cfg.token_grid)
    weights = training_weights({"sam": model.sam, "hipt": model.hipt}, sam_checkpoint=cfg.sam_checkpoint,
                               hipt_checkpoint=cfg.hipt_checkpoint)
    if weights.missing and not cfg.train_encoders:
        files = " and ".join(f"{w.file} ({w.title})" for w in weights.missing)
        flags = "/".join("--hipt-checkpoint" if w.encoder.startswith("hipt") else
                         "--sam-checkpoint" if w.kind == "sam" else "--pathology-checkpoint"
                         for w in weights.missing)
        raise ConfigError(
            f"model preset {cfg.preset} needs the official weights {files}, neither given nor registered: "
            f"pass {flags} FILE or register them once with `wsiseg models add-base FILE...` (downloads: "
            f"{', '.join(w.url for w in weights.missing)}); for a CPU try-out without them add --preset tiny"
            + (f" --pathology-encoder {cfg.pathology_encoder}_tiny"
               if cfg.pathology_encoder and not cfg.pathology_encoder.endswith("_tiny") else ""))
    for kind, given, found in (("SAM", cfg.sam_checkpoint, weights.sam_checkpoint),
                               ("Fp", cfg.hipt_checkpoint, weights.hipt_checkpoint)):
        if given is None and found is not None:
            click.echo(f"using the registered {kind} weights {found}", err=True)
    return dataclasses.replace(
        cfg, sam_checkpoint=None if weights.sam_checkpoint is None else str(weights.sam_checkpoint),
        hipt_checkpoint=None if weights.hipt_checkpoint is None else str(weights.hipt_checkpoint))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="NAME|FILE",
              help="Recipe: a packaged one by name (bcss, crag, glas-cpu) or a YAML file; the flags below "
                   "override its keys [default: the paper recipe of --dataset bcss|crag].")
@click.option("--dataset", type=click.Choice(["bcss", "crag", "folder"]), help="Data set layout.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Data set folder [default: $WSISEG_DATA/<dataset> when it exists].")
@click.option("--class-map", type=click.Path(dir_okay=False, path_type=Path),
              help="folder: class-map YAML/JSON (mask values -> names, colours, ignore values).")
@click.option("--mapping", type=click.Path(dir_okay=False, path_type=Path),
              help="bcss: file overriding the class grouping of the 22 BCSS codes.")
@click.option("--split-file", type=click.Path(dir_okay=False, path_type=Path),
              help="bcss/crag: an img_id,fold CSV (fold -1 test, 0 val, 1.. train), e.g. the reference "
                   "code's BCSS_cv.csv / CRAG_cv.csv, instead of the default split.")
@click.option("--patch-size", type=int, help="Patch side in pixels at --mpp.")
@click.option("--mpp", type=float, help="Training resolution, microns per pixel.")
@click.option("--source-mpp", type=float, help="folder/crag: the images' own microns per pixel.")
@click.option("--val-fraction", type=float, help="Share of training images/ROIs held out for validation.")
@click.option("--preset", help="Model preset (sam_path_vit_b, tiny, ...).")
@click.option("--variant", type=click.Choice(["sam_path", "finetuned_sam", "pathology_only", "sam_pre_neck"]),
              help="sam_path (the paper's model), finetuned_sam ('Fine-tuned SAM (w.o. Fp)': SAM's own neck, "
                   "no R), pathology_only ('w.o. Fs'), sam_pre_neck (SAM's pre-neck features through a new "
                   "R; not in the paper).")
@click.option("--pathology-encoder", metavar="NAME",
              help="Fp instead of the preset's HIPT: uni, uni2_h, virchow2, h_optimus_0, h_optimus_1, "
                   "prov_gigapath (their *_tiny variants for CPU try-outs); docs/foundation-encoders.md.")
@click.option("--token-grid", type=click.Choice(["resize_input", "resample_features"]),
              help="Patch-14 Fp: meet SAM's grid by resizing the input to 14x16ths (default) or by "
                   "resampling Fp's features.")
@click.option("--input-size", type=int, help="Model input side in pixels (multiple of 16).")
@click.option("--train-encoders/--freeze-encoders", default=None, help="Train Fs/Fp too (default: frozen).")
@options.sam_checkpoint("the encoder's start [default: the file registered for the preset's encoder].")
@options.hipt_checkpoint("the encoder's weights [default: the file registered for the preset's encoder].")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int, help="Images per forward pass.")
@click.option("--accumulate", type=int, help="Gradient accumulation steps (effective batch = batch x this).")
@click.option("--lr", type=float, help="Peak learning rate (AdamW).")
@click.option("--weight-decay", type=float)
@click.option("--alpha", type=float, help="Loss: weight of focal vs Dice (paper: 0.25 BCSS, 0.125 CRAG).")
@click.option("--beta", type=float, help="Loss: weight of the IoU-prediction MSE.")
@click.option("--seed", type=int)
@options.device(default=None, extra="[default: the recipe's]")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), help="Mixed precision on GPUs.")
@click.option("--num-workers", type=int, help="Data-loading worker processes.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (last/best .wsiseg, metrics.jsonl/csv, curves.png).")
@click.option("--cache-embeddings", type=click.Path(file_okay=False, path_type=Path),
              help="Cache frozen-encoder features here and train R, prompts and decoder from them. "
                   "Only flips and rot90 are applied (to features and labels together); random resized "
                   "crop and colour jitter are off.")
@click.option("--resume", is_flag=True, help="Continue the run in --out after its last completed epoch.")
@options.quiet()
def command(config_path: str | None, resume: bool, quiet: bool, train_encoders: bool | None,
            **flags: Any) -> None:
    """Fine-tune SAM-Path (R, class prompts, mask decoder) on a data set.

    \b
    wsiseg train --dataset bcss            # the paper's BCSS recipe, data in $WSISEG_DATA/bcss
    wsiseg train --dataset bcss --data-dir BCSS/ --out runs/bcss --preset tiny   # a CPU try-out
    wsiseg train --config glas-cpu --data-dir glas/ --out runs/glas

    The paper recipes (bcss, crag) need the official SAM ViT-B and HIPT ViT-S weights: pass
    --sam-checkpoint/--hipt-checkpoint, or register them once with `wsiseg models add-base FILE...`.
    """
    from wsiseg.recipes import DATASET_RECIPES, find_recipe
    from wsiseg.registry import find_data_dir
    from wsiseg.train.config import TrainConfig
    from wsiseg.train.datasets import build_dataset
    from wsiseg.train.trainer import Trainer

    overrides = {k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items() if v is not None}
    overrides["train_encoders"] = train_encoders
    assert set(overrides) <= {*_FLAG_KEYS, "train_encoders"}
    if config_path is None and flags["dataset"] in DATASET_RECIPES:
        config_path = DATASET_RECIPES[flags["dataset"]]
    if config_path is not None:
        cfg = TrainConfig.from_file(find_recipe(config_path), overrides)
    else:
        cfg = TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None}, "command line")
    cfg = _with_base_weights(cfg)
    data_dir = find_data_dir(cfg.dataset, cfg.data_dir, hint="set data_dir in the recipe")
    cfg = dataclasses.replace(cfg, data_dir=str(data_dir))
    options = {"patch_size": cfg.patch_size, "mpp": cfg.mpp, "val_fraction": cfg.val_fraction,
               "seed": cfg.seed, "source_mpp": cfg.source_mpp, "class_map": cfg.class_map,
               "mapping": cfg.mapping, "split_file": cfg.split_file, "whole_image": cfg.whole_image}
    train_set = build_dataset(cfg.dataset, data_dir, "train", **options)
    val_set = build_dataset(cfg.dataset, data_dir, "val", **options) if cfg.val_fraction > 0 else None
    click.echo(f"training on {len(train_set)} patches ({len(train_set.groups)} images), validating on "
               f"{len(val_set) if val_set else 0}; classes: {', '.join(train_set.classes.names)}", err=True)
    result = Trainer(cfg, train_set, val_set, progress=not quiet).fit(resume=resume)
    best = result.best_record
    click.echo(f"best epoch {best['epoch']}: val micro Dice {best.get('val_micro_dice')}; "
               f"models in {result.out_dir} (best.wsiseg, last.wsiseg)")
