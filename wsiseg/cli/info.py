"""``wsiseg info SLIDE``: levels, size, resolution, vendor, tissue fraction (after QC) and tile counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from wsiseg.cli import options
from wsiseg.qc import QCLabel, QCSettings, assess_slide
from wsiseg.slide import make_tile_grid, open_slide
from wsiseg.tiling import Tiling


def slide_info(path: Path, slide_mpp: float | None, mpp: float, tile_size: int, overlap: int,
               settings: QCSettings | None = None) -> dict[str, Any]:
    """Everything ``wsiseg info`` reports, as a JSON-serialisable dict: ``tissue_fraction`` is the share of
    the slide that is analysable tissue after the thumbnail's QC (pen ink left out), ``tissue_detected``
    the share detected as tissue before it, ``qc`` the artifacts' shares of the tissue and artifacts seen
    (as QC areas count them; blur is measured on the tiles, by `segment` and `wsiseg qc`)."""
    tiling = Tiling.create(mpp, tile_size, overlap)
    with open_slide(path, mpp=slide_mpp) as slide:
        info = slide.describe()
        info["mpp_source"] = "--slide-mpp" if slide_mpp is not None else "metadata"
        qc_map, _ = assess_slide(slide, settings)
        tissue = qc_map.analysable_mask()
        grid_all = make_tile_grid(slide, tiling)
        grid_tissue = make_tile_grid(slide, tiling, tissue=tissue)
        detected = float(qc_map.tissue.mean()) if qc_map.tissue.size else 0.0
        seen = int((qc_map.labels != QCLabel.BACKGROUND).sum())  # tissue and artifacts, as QC areas count
        pen = int((qc_map.labels == QCLabel.PEN).sum())
        info["tissue_fraction"] = round(tissue.tissue_fraction, 4)
        info["tissue_detected"] = round(detected, 4)
        info["qc"] = {"pen": round(pen / seen, 4) if seen else 0.0}
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
    qc = ", ".join(f"{name} {share:.1%}" for name, share in info["qc"].items())
    lines.append(f"tissue fraction:  {info['tissue_fraction']:.1%} after QC, {info['tissue_detected']:.1%} "
                 f"detected (detected at {info['tissue_mpp']:.4g} um/px); excluded: {qc} of the tissue")
    t = info["tiles"]
    lines.append(f"tiles:            {t['total']} total ({t['columns']} x {t['rows']}), "
                 f"{t['with_tissue']} with analysable tissue, {t['tile_size']} px tiles, "
                 f"overlap {t['overlap']} px "
                 f"at {t['mpp']:.4g} um/px ({t['width_t']} x {t['height_t']} px)")
    return "\n".join(lines)


@click.command("info")
@click.argument("slide", type=click.Path(path_type=Path))
@click.option("--mpp", type=float, default=1.0, show_default=True,
              help="Resolution (um/px) at which tiles are counted (as in `wsiseg segment --mpp`).")
@options.slide_mpp()
@click.option("--tile-size", type=int, default=1024, show_default=True, help="Tile side in pixels at --mpp.")
@click.option("--overlap", type=int, default=0, show_default=True,
              help="Tile overlap in pixels at --mpp (at most half the tile).")
@options.qc_config()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def command(slide: Path, mpp: float, slide_mpp: float | None, tile_size: int, overlap: int,
            qc_config: Path | None, as_json: bool) -> None:
    """Show a slide's levels, resolution, tissue fraction (after QC) and tile counts."""
    info = slide_info(slide, slide_mpp, mpp, tile_size, overlap, QCSettings.load(qc_config))
    click.echo(json.dumps(info, indent=2) if as_json else _format(info))
