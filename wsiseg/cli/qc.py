"""``wsiseg qc``: quality control of slides without segmenting them (QC images, GeoJSON, a table)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from wsiseg.cli import as_flags, options
from wsiseg.cli.segment import expand_slides
from wsiseg.qc.settings import QCSettings


@click.command("qc")
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Folder for the per-slide QC images, label images (+ JSON), GeoJSON and qc.csv.")
@options.qc_config()
@click.option("--blur/--no-blur", default=True, show_default=True,
              help="Check focus on the tissue read at --blur-mpp (reads the slide like a segmentation; "
                   "--no-blur: thumbnail checks only, seconds per slide).")
@click.option("--blur-mpp", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="Resolution (um/px) the focus is judged at: use your segmentation's --mpp.")
@click.option("--tile-size", type=click.IntRange(min=64), default=1024, show_default=True,
              help="Tile side in pixels at --blur-mpp.")
@options.slide_mpp()
@click.option("--read-workers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Threads reading tiles for the focus check.")
@options.quiet()
def command(slides: tuple[Path, ...], out: Path, qc_config: Path | None, blur: bool, blur_mpp: float,
            tile_size: int, slide_mpp: float | None, read_workers: int, quiet: bool) -> None:
    """Quality control of SLIDE_OR_DIR...: pen ink and out-of-focus tissue, per slide a thumbnail with the
    artifacts hatched (<slide>.qc.png), the QC label image (<slide>.qc-labels.png + .json), the artifacts as
    QuPath annotations (<slide>.qc.geojson; edit them in QuPath and pass the file to `segment --mask`), and
    one table for all slides (qc.csv)."""
    from wsiseg.infer.qc_report import QC_TABLE, assess_slides

    rows = assess_slides(expand_slides(slides), out, QCSettings.load(qc_config), blur=blur, blur_mpp=blur_mpp,
                         tile_size=tile_size, slide_mpp=slide_mpp, read_workers=read_workers,
                         progress=not quiet, report=lambda line: click.echo(as_flags(line), err=True))
    for row in rows:
        if row.areas is not None:
            a = row.areas
            excluded = ", ".join(f"{name} {a.share(name):.1%}" for name, v in a.excluded_um2.items() if v > 0)
            click.echo(f"{row.slide}: tissue {a.tissue_um2 / 1e6:.3g} mm^2, analysable "
                       f"{a.analysable_um2 / 1e6:.3g} mm^2; excluded {excluded or 'nothing'}")
    failed = sum(1 for r in rows if r.error)
    click.echo(f"wsiseg qc: {len(rows)} slides, {failed} failed; table: {out / QC_TABLE}")
    if failed:
        sys.exit(1)
