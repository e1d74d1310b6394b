"""``wsiseg segment``: whole slides -> OME-Zarr probability/label pyramids (+ preview PNG, GeoJSON)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from wsiseg.errors import SlideError

#: File endings treated as slides when a directory is given.
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".vms", ".vmu", ".scn", ".bif", ".svslide",
                  ".dcm", ".png", ".jpg", ".jpeg")


def expand_slides(inputs: tuple[Path, ...]) -> list[Path]:
    """Files as given; directories expanded to the slide files directly inside them (sorted)."""
    slides: list[Path] = []
    for item in inputs:
        if item.is_dir() and item.suffix.lower() != ".mrxs":
            found = sorted(p for p in item.iterdir()
                           if p.is_file() and p.name.lower().endswith(SLIDE_SUFFIXES))
            if not found:
                raise SlideError(f"no slide files ({', '.join(SLIDE_SUFFIXES)}) in directory {item}")
            slides.extend(found)
        else:
            slides.append(item)
    return slides


@click.command("segment")
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_spec", metavar="NAME|CKPT|null",
              help="A registered model name (`wsiseg models list`), a .wsiseg checkpoint, or 'null' "
                   "(constant output; measures the pipeline) [default: $WSISEG_MODEL, else the registry's "
                   "default model].")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output .zarr for one slide; a directory (one <slide>.zarr each) for several or a dir.")
@click.option("--mpp", type=float, help="Analysis resolution in um/px [default: the model's].")
@click.option("--output-mpp", type=float,
              help="Resolution of the output pyramid's level 0 in um/px, a whole multiple of --mpp "
                   "[default: the model's native output grid, e.g. 4x --mpp for SAM-Path].")
@click.option("--tile-size", type=int, help="Tile side in pixels at --mpp [default: the model's].")
@click.option("--overlap", type=int, help="Pixels shared by neighbouring tiles, <= tile/2 [default: tile/8].")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Tiles per model call.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Model arithmetic: fp32 (the reference's), bf16/fp16 on GPUs (faster; probabilities "
                   "within ~1e-3).")
@click.option("--compile", "compile_model", is_flag=True,
              help="torch.compile the model: ~25% more tiles/s on a GPU after ~1 min of compilation "
                   "(worth it for thousands of tiles).")
@click.option("--read-workers", type=int, help="Threads reading tiles [default: min(8, CPUs)].")
@click.option("--write-workers", type=int,
              help="Threads finalising, compressing and writing chunks [default: min(4, max(2, CPUs/4))].")
@click.option("--tissue/--no-tissue", default=True, show_default=True,
              help="Skip tiles without tissue (their area is written as 'not analysed', label 0).")
@click.option("--mask", type=click.Path(path_type=Path),
              help="Analyse only this ROI: a GeoJSON (level-0 coordinates) or a mask image.")
@click.option("--geojson", type=click.Path(path_type=Path),
              help="Also export QuPath GeoJSON (a file for one slide, a directory for several).")
@click.option("--overwrite", is_flag=True, help="Replace finished outputs (unfinished ones always resume).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--sam-checkpoint", type=click.Path(path_type=Path),
              help="Official SAM weights a slim checkpoint needs [default: the registered file].")
@click.option("--hipt-checkpoint", type=click.Path(path_type=Path),
              help="HIPT weights a slim checkpoint needs [default: the registered file].")
@click.option("--ngff-version", type=click.Choice(["0.4", "0.5"]), default="0.4", show_default=True,
              help="OME-NGFF version: 0.4 (zarr v2, widest viewer support) or 0.5 (zarr v3).")
@click.option("--slide-mpp", type=float, help="Level-0 um/px for slides that record none.")
@click.option("--preview/--no-preview", default=True, show_default=True, help="Write <out>.preview.png.")
@click.option("--scheduler", metavar="ADDRESS",
              help="dask.distributed scheduler address (tcp://host:8786): slides run in parallel on its "
                   "workers, which must see the same files.")
def command(slides: tuple[Path, ...], model_spec: str | None, out: Path, mpp: float | None,
            output_mpp: float | None, tile_size: int | None, overlap: int | None, batch_size: int,
            device: str, precision: str, compile_model: bool, read_workers: int | None,
            write_workers: int | None, tissue: bool,
            mask: Path | None, geojson: Path | None, overwrite: bool, quiet: bool,
            sam_checkpoint: Path | None, hipt_checkpoint: Path | None, ngff_version: str,
            slide_mpp: float | None, preview: bool, scheduler: str | None) -> None:
    """Segment SLIDE_OR_DIR... into OME-Zarr probability and label pyramids.

    A run that is killed resumes where it stopped when started again with the same arguments. Without
    --model: $WSISEG_MODEL, else the default of `wsiseg models` (wsiseg segment slide.svs --out slide.zarr).
    """
    from wsiseg.infer.batch import NULL_MODEL, ModelSpec, segment_slides
    from wsiseg.infer.memory import OPT_OUT, tame_malloc
    from wsiseg.infer.options import SegmentOptions
    from wsiseg.io.omezarr import NgffVersion

    if os.environ.get(OPT_OUT, "1") != "0":
        tame_malloc()  # a setting of the whole process: this command's, not the library's
    options = SegmentOptions(mpp=mpp, tile_size=tile_size, overlap=overlap, output_mpp=output_mpp,
                             batch_size=batch_size, read_workers=read_workers, write_workers=write_workers,
                             tissue=tissue, mask=mask, overwrite=overwrite, slide_mpp=slide_mpp,
                             ngff_version=NgffVersion(ngff_version), preview=preview)
    paths = expand_slides(slides)
    single = len(paths) == 1 and not slides[0].is_dir()
    if model_spec == NULL_MODEL:
        spec = ModelSpec(NULL_MODEL, device, mpp=mpp, tile_size=tile_size)
    else:
        from wsiseg.registry import resolve_model

        model = resolve_model(model_spec, sam_checkpoint=sam_checkpoint, hipt_checkpoint=hipt_checkpoint)
        spec = ModelSpec(model.path, device, sam_checkpoint=model.sam_checkpoint,
                         hipt_checkpoint=model.hipt_checkpoint, precision=precision, compile=compile_model)
    batch = segment_slides(paths, spec, out, options, single=single, geojson=geojson, scheduler=scheduler,
                           progress=not quiet)
    if quiet:  # no per-slide lines were written while running
        for path, message in batch.failures:
            click.echo(f"wsiseg: error: {path.name}: {message}", err=True)
    done = len(paths) - len(batch.failures)
    click.echo(f"wsiseg segment: {done}/{len(paths)} slides done, {batch.n_tiles} tiles, "
               f"{batch.seconds:.1f} s; output: {out}"
               + (f"; failed: {', '.join(p.name for p, _ in batch.failures)}" if batch.failures else ""))
    if batch.failures:
        sys.exit(1)
