"""``wsiseg info SLIDE``: levels, size, resolution, vendor, tissue fraction and tile counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from wsiseg.slide import detect_tissue, make_tile_grid, open_slide
from wsiseg.tiling import Tiling


def slide_info(path: Path, slide_mpp: float | None, mpp: float, tile_size: int, overlap: int,
               tissue_mpp: float = 8.0) -> dict[str, Any]:
    """Everything ``wsiseg info`` reports, as a JSON-serialisable dict."""
    tiling = Tiling.create(mpp, tile_size, overlap)
    with open_slide(path, mpp=slide_mpp) as slide:
        info = slide.describe()
        info["mpp_source"] = "--slide-mpp" if slide_mpp is not None else "metadata"
        tissue = detect_tissue(slide, mpp=tissue_mpp)
        grid_all = make_tile_grid(slide, tiling)
        grid_tissue = make_tile_grid(slide, tiling, tissue=tissue)
        info["tissue_fraction"] = round(tissue.tissue_fraction, 4)
        info["tissue_mpp"] = tissue.mpp
        info["tiles"] = {
            "mpp": mpp,
            "tile_size": tile_size,
            "overlap": overlap,
            "width_t": grid_all.width_t,
            "height_t": grid_all.height_t,
            "columns": grid_all.n_cols,
            "rows": grid_all.n_rows,
            "total": grid_all.n_total,
            "with_tissue": len(grid_tissue),
        }
    return info


def _format(info: dict[str, Any]) -> str:
    lines = [
        f"slide:            {info['path']}",
        f"vendor:           {info['vendor']}",
        f"size (level 0):   {info['width0']} x {info['height0']} px",
        f"resolution:       {info['mpp_x']:.4g} x {info['mpp_y']:.4g} um/px ({info['mpp_source']})",
        f"objective power:  {info['objective_power'] if info['objective_power'] is not None else 'unknown'}",
        f"levels:           {len(info['levels'])}",
    ]
    for lv in info["levels"]:
        lines.append(f"  {lv['level']}: {lv['width']} x {lv['height']} px, "
                     f"downsample {lv['downsample']:.4g}, "
                     f"{lv['mpp']:.4g} um/px")
    lines.append(f"associated:       {', '.join(info['associated_images']) or 'none'}")
    lines.append(f"tissue fraction:  {info['tissue_fraction']:.1%} "
                 f"(detected at {info['tissue_mpp']:.4g} um/px)")
    t = info["tiles"]
    lines.append(f"tiles:            {t['total']} total ({t['columns']} x {t['rows']}), "
                 f"{t['with_tissue']} with tissue, {t['tile_size']} px tiles, overlap {t['overlap']} px "
                 f"at {t['mpp']:.4g} um/px ({t['width_t']} x {t['height_t']} px)")
    return "\n".join(lines)


@click.command("info")
@click.argument("slide", type=click.Path(path_type=Path))
@click.option("--mpp", type=float, default=1.0, show_default=True,
              help="Resolution (um/px) at which tiles are counted (as in `wsiseg segment --mpp`).")
@click.option("--slide-mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The slide's level-0 um/px; overrides its metadata (required when it has none).")
@click.option("--tile-size", type=int, default=1024, show_default=True, help="Tile side in pixels at --mpp.")
@click.option("--overlap", type=int, default=0, show_default=True,
              help="Tile overlap in pixels at --mpp (at most half the tile).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def command(slide: Path, mpp: float, slide_mpp: float | None, tile_size: int, overlap: int,
            as_json: bool) -> None:
    """Show a slide's levels, resolution, tissue fraction and tile counts."""
    info = slide_info(slide, slide_mpp, mpp, tile_size, overlap)
    click.echo(json.dumps(info, indent=2) if as_json else _format(info))
