"""``wsiseg summary``: rebuild a folder's cohort table (``summary.csv``) from its segmentations."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("summary")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
def command(folder: Path) -> None:
    """Rebuild FOLDER/summary.csv from the segmentations (*.zarr) in FOLDER: one row per slide with its
    analysed area and each class's area (mm^2) and share of the analysed area, model and wsiseg version."""
    from wsiseg.export.composition import rebuild_summary

    path, n_rows = rebuild_summary(folder)
    click.echo(f"wrote {path}: {n_rows} slides")
