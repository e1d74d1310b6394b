"""``wsiseg demo``: the whole pipeline on built-in synthetic slides (no downloads, no GPU)."""

from __future__ import annotations

from pathlib import Path

import click

from wsiseg.cli import options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo-output"), show_default=True,
              help="Folder for the demo's data, model, OME-Zarr, preview and GeoJSON.")
@click.option("--epochs", type=click.IntRange(min=1), default=12, show_default=True,
              help="Training epochs of the tiny model.")
@click.option("--overwrite", is_flag=True, help="Run again over a finished demo.")
@options.quiet()
def command(out_dir: Path, epochs: int, overwrite: bool, quiet: bool) -> None:
    """Train a tiny SAM-Path on synthetic slides, segment an unseen one, export GeoJSON and score it.

    Takes a few minutes on 2 CPU cores; the final line gives Dice against the slide's exact ground truth.
    """
    from wsiseg.cli import as_flags
    from wsiseg.demo import run_demo

    result = run_demo(out_dir, epochs=epochs, overwrite=overwrite, progress=not quiet,
                      log=lambda line: click.echo(as_flags(line), err=True))
    click.echo(as_flags(result.summary()))
