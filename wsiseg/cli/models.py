"""``wsiseg models``: register models by name (and a default) and the official base weight files."""

from __future__ import annotations

import os
from pathlib import Path

import click

from wsiseg.registry import ENV_DATA, ENV_HOME, ENV_MODEL, Registry
from wsiseg.weights import weights_label


def _short(sha256: str) -> str:
    return sha256[:12]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def command() -> None:
    """Register models by name, a default model, and the official SAM/HIPT weight files.

    \b
    wsiseg models add bcss runs/bcss/best.wsiseg --default   # then: wsiseg segment slide.svs --out slide.zarr
    wsiseg models add-base sam_vit_b_01ec64.pth vit256_small_dino.pth
    wsiseg models list

    \b
    Slim checkpoints (the default of `wsiseg train`) do not store the frozen encoders: they need the
    official files again, found among the registered base files by sha256. Registered base files also
    serve `wsiseg train` (the paper recipes need sam_vit_b_01ec64.pth and vit256_small_dino.pth).
    --sam-checkpoint/--hipt-checkpoint always override the registry.

    \b
    The registry is one JSON file, registry.json, in $WSISEG_HOME, else the user's config folder
    (~/.config/wsiseg on Linux). WSISEG_MODEL=NAME|FILE is the model `segment` uses without --model,
    before the default. WSISEG_DATA=DIR makes DIR/<dataset> the default --data-dir.
    """


@command.command("add", short_help="Register a .wsiseg model as NAME.")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--default", "make_default", is_flag=True, help="Make it the model `segment` uses by default.")
@click.option("--replace", is_flag=True, help="Re-use a registered name for another file.")
def add(name: str, file: Path, make_default: bool, replace: bool) -> None:
    """Register the .wsiseg checkpoint FILE as NAME (checked, sha256 recorded; the file stays where it is)."""
    registry = Registry()
    model = registry.add(name, file, default=make_default, replace=replace)
    needs = " and ".join(weights_label(k) for k in model.base)
    slim = f", slim: needs {needs} weights" if model.base else ""
    click.echo(f"registered model {name}: {model.path} (sha256 {_short(model.sha256)}{slim})"
               + (" as the default" if make_default else ""))
    for kind in registry.missing_base(model.base):
        record = model.base[kind]
        click.echo(f"wsiseg: note: {name} needs the {weights_label(kind)} weights {record.get('file')!r} "
                   f"(sha256 {_short(record.get('sha256', ''))}...), not registered yet: run "
                   f"`wsiseg models add-base FILE` once (or pass --{kind}-checkpoint FILE each time)",
                   err=True)


@command.command("add-base", short_help="Register official SAM/HIPT/foundation-model weight files.")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--encoder", metavar="PRESET",
              help="The encoder the files are for, where their layout cannot tell "
                   "(h_optimus_0 or h_optimus_1).")
def add_base(files: tuple[Path, ...], encoder: str | None) -> None:
    """Register official weight files: Segment Anything's sam_vit_{b,l,h}_*.pth, HIPT's vit256_small_dino.pth,
    and the pathology foundation models' files (UNI, UNI2-h, Virchow2, H-optimus-0/1, Prov-GigaPath:
    model.safetensors or pytorch_model.bin as downloaded from their model cards).

    Each file's kind and size are recognised from its contents; slim models find it again by sha256 and
    training by encoder, wherever it was registered from (the file stays where it is).
    """
    registry = Registry()
    for file in files:
        base = registry.register_base_file(file, encoder)
        label = weights_label(base.kind, base.encoder)
        click.echo(f"registered {label} weights ({base.encoder}): {base.path} "
                   f"(sha256 {_short(base.sha256)})")


@command.command("list", short_help="Show models, the default and base files.")
def list_() -> None:
    """Show the registered models (* = default), base weight files and where the registry lives."""
    registry = Registry()
    models, default, bases = registry.models(), registry.default, registry.base_files()
    click.echo(f"registry: {registry.path}" + ("" if registry.path.exists() else " (empty)"))
    click.echo("models:" if models else "models: none (wsiseg models add NAME FILE [--default])")
    width = max((len(m.name) for m in models), default=0)
    for m in models:
        flags = [f"needs {'+'.join(sorted(m.base))}"] if m.base else []
        if not m.path.is_file():
            flags.append("MISSING")
        mark = "*" if m.name == default else " "
        click.echo(f"  {mark} {m.name:<{width}}  {m.path}  sha256 {_short(m.sha256)}"
                   + (f"  ({', '.join(flags)})" if flags else ""))
    click.echo("base weight files:" if bases else
               "base weight files: none (wsiseg models add-base sam_vit_b_01ec64.pth vit256_small_dino.pth)")
    for b in bases:
        missing = "" if b.path.is_file() else "  (MISSING)"
        click.echo(f"    {b.kind:<4}  {b.encoder:<10}  {b.path}  sha256 {_short(b.sha256)}{missing}")
    for var in (ENV_HOME, ENV_MODEL, ENV_DATA):
        if os.environ.get(var):
            click.echo(f"{var}={os.environ[var]}")


@command.command("remove", short_help="Unregister a model.")
@click.argument("name")
def remove(name: str) -> None:
    """Unregister the model NAME (its file is not deleted)."""
    model = Registry().remove(name)
    click.echo(f"removed model {name} ({model.path}; the file is left alone)")


@command.command("remove-base", short_help="Unregister a base weights file.")
@click.argument("file_or_sha256")
def remove_base(file_or_sha256: str) -> None:
    """Unregister a base weights file, by its path or a sha256 prefix (the file is not deleted)."""
    base = Registry().remove_base_file(file_or_sha256)
    click.echo(f"removed {weights_label(base.kind, base.encoder)} weights {base.path}")


@command.command("default", short_help="Show or set the default model.")
@click.argument("name", required=False)
@click.option("--unset", is_flag=True, help="Have no default model.")
def default(name: str | None, unset: bool) -> None:
    """Make the registered model NAME the default (without NAME: show the default)."""
    registry = Registry()
    if unset:
        registry.set_default(None)
        click.echo("no default model")
    elif name is None:
        click.echo(registry.default or "no default model")
    else:
        registry.set_default(name)
        click.echo(f"default model: {name}")
