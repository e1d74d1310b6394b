"""``wsiseg segment``: whole slides -> OME-Zarr probability/label pyramids (+ preview PNG, GeoJSON)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from tqdm import tqdm

from wsiseg.cli import as_flags, options
from wsiseg.errors import SlideError
from wsiseg.frames import CoordinateFrame
from wsiseg.infer.options import ReadErrorPolicy
from wsiseg.qc.settings import QCMode, QCSettings

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
@options.device()
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Model arithmetic: fp32 (the reference's), bf16/fp16 on GPUs (faster; probabilities "
                   "within ~1e-3).")
@click.option("--compile", "compile_model", is_flag=True,
              help="torch.compile the model: ~25% more tiles/s on a GPU after ~1 min of compilation "
                   "(worth it for thousands of tiles).")
@click.option("--lanes", type=click.IntRange(min=1),
              help="Model threads per device, each with its own CUDA stream, so that one's copies overlap "
                   "another's compute [default: 2 on a GPU, 1 on the CPU]; 1 halves the GPU memory for "
                   "activations.")
@click.option("--read-workers", type=int, help="Threads reading tiles [default: min(8, CPUs)].")
@click.option("--write-workers", type=int,
              help="Threads finalising, compressing and writing chunks [default: min(4, max(2, CPUs/4))].")
@click.option("--tissue/--no-tissue", default=True, show_default=True,
              help="Skip tiles without tissue (their area is written as 'not analysed', label 0).")
@click.option("--mask", type=click.Path(path_type=Path),
              help="Analyse only this ROI: a GeoJSON (e.g. exported from QuPath; see --geojson-frame) or a "
                   "mask image. Features classified 'Artifact' or 'Artifact: <kind>' (a reviewed QC export) "
                   "are left out instead, and replace the automatic QC.")
@click.option("--qc", "qc_mode", type=click.Choice([m.value for m in QCMode]), default="default",
              show_default=True,
              help="Quality control: default = leave pen ink and blurred tissue out of the analysis; report "
                   "= detect and record them, analyse everything; off = tissue detection only.")
@options.qc_config()
@click.option("--geojson", type=click.Path(path_type=Path),
              help="Also export QuPath GeoJSON (a file for one slide, a directory for several).")
@click.option("--geojson-frame", type=click.Choice([f.value for f in CoordinateFrame]), default="qupath",
              show_default=True,
              help="Pixel frame of GeoJSON coordinates (--mask in, --geojson out): qupath = OpenSlide level "
                   "0 minus the slide's bounds offset (MIRAX etc.; QuPath's frame), openslide = level 0.")
@click.option("--on-read-error", type=click.Choice([p.value for p in ReadErrorPolicy]), default="skip",
              show_default=True,
              help="A tile that cannot be decoded: skip it (written as not analysed, named in a warning and "
                   "the output's metadata) or fail the slide.")
@click.option("--overwrite", is_flag=True,
              help="Redo finished outputs (without it they are skipped; unfinished ones always resume).")
@options.quiet()
@options.sam_checkpoint("the base a slim checkpoint needs [default: the registered file].")
@options.hipt_checkpoint("the base a slim checkpoint needs [default: the registered file].")
@click.option("--ngff-version", type=click.Choice(["0.4", "0.5"]), default="0.4", show_default=True,
              help="OME-NGFF version: 0.4 (zarr v2, widest viewer support) or 0.5 (zarr v3).")
@options.slide_mpp()
@click.option("--preview/--no-preview", default=True, show_default=True, help="Write <out>.preview.png.")
@click.option("--preview-size", type=int, default=1024, show_default=True,
              help="Longer side of the preview PNG in pixels.")
@click.option("--objects", "object_classes", multiple=True, metavar="CLASS[,CLASS...]",
              help="With --geojson: also export every connected region of these classes as one object with "
                   "measurements (<name>.objects.geojson, table <name>.objects.csv; counts and densities in "
                   "summary.csv).")
@click.option("--devices", "devices_value", metavar="all|DEVICE,DEVICE...",
              help="Use several devices of this machine at once: one worker process and model replica per "
                   "device (e.g. cuda:0,cuda:1, or all CUDA devices), slides handed out as workers finish; "
                   "with fewer slides than devices, one replica per device shares each slide's batches. "
                   "One device is the same as --device.")
@click.option("--scheduler", metavar="ADDRESS",
              help="dask.distributed scheduler address (tcp://host:8786): slides run in parallel on its "
                   "workers, which must see the same files.")
def command(slides: tuple[Path, ...], model_spec: str | None, out: Path, mpp: float | None,
            output_mpp: float | None, tile_size: int | None, overlap: int | None, batch_size: int,
            device: str, precision: str, compile_model: bool, lanes: int | None, read_workers: int | None,
            write_workers: int | None, tissue: bool, mask: Path | None, qc_mode: str,
            qc_config: Path | None, geojson: Path | None, geojson_frame: str, on_read_error: str,
            overwrite: bool, quiet: bool, sam_checkpoint: Path | None, hipt_checkpoint: Path | None,
            ngff_version: str, slide_mpp: float | None, preview: bool, preview_size: int,
            scheduler: str | None, object_classes: tuple[str, ...], devices_value: str | None) -> None:
    """Segment SLIDE_OR_DIR... into OME-Zarr probability and label pyramids.

    Running the same command again continues: finished outputs are skipped, a run that was killed
    resumes where it stopped. For a directory of slides, <out>/summary.csv gets one row per slide (areas
    and shares of each class; `wsiseg summary` rebuilds it). Without --model: $WSISEG_MODEL, else the
    default of `wsiseg models` (wsiseg segment slide.svs --out slide.zarr).
    """
    from wsiseg.infer.cohort import NULL_MODEL, ModelSpec, segment_slides
    from wsiseg.infer.cohort.devices import parse_devices
    from wsiseg.infer.memory import OPT_OUT, tame_malloc
    from wsiseg.infer.options import SegmentOptions
    from wsiseg.io.omezarr import NgffVersion

    if os.environ.get(OPT_OUT, "1") != "0":
        tame_malloc()  # a setting of the whole process: this command's, not the library's
    objects = tuple(n.strip() for v in object_classes for n in v.split(",") if n.strip())
    if objects and geojson is None:
        raise click.UsageError("--objects needs --geojson (where the objects and their table go)")
    options = SegmentOptions(mpp=mpp, tile_size=tile_size, overlap=overlap, output_mpp=output_mpp,
                             batch_size=batch_size, read_workers=read_workers, write_workers=write_workers,
                             tissue=tissue, mask=mask, overwrite=overwrite, slide_mpp=slide_mpp,
                             ngff_version=NgffVersion(ngff_version), preview=preview,
                             preview_size=preview_size, geojson_frame=CoordinateFrame(geojson_frame),
                             on_read_error=ReadErrorPolicy(on_read_error), qc=QCMode(qc_mode),
                             qc_settings=QCSettings.load(qc_config), objects=objects)
    devices = parse_devices(devices_value) if devices_value else None
    if devices is not None and len(devices) == 1:
        device, devices = devices[0], None
    paths = expand_slides(slides)
    single = len(paths) == 1 and not slides[0].is_dir()
    if model_spec == NULL_MODEL:
        spec = ModelSpec(NULL_MODEL, device, mpp=mpp, tile_size=tile_size)
    else:
        from wsiseg.registry import resolve_model

        model = resolve_model(model_spec, sam_checkpoint=sam_checkpoint, hipt_checkpoint=hipt_checkpoint)
        spec = ModelSpec(model.path, device, sam_checkpoint=model.sam_checkpoint,
                         hipt_checkpoint=model.hipt_checkpoint, precision=precision, compile=compile_model,
                         lanes=lanes)
    def report(line: str) -> None:
        tqdm.write(as_flags(line), file=sys.stderr)

    batch = segment_slides(paths, spec, out, options, single=single, geojson=geojson, scheduler=scheduler,
                           devices=devices, progress=not quiet, report=report)
    if quiet:  # no per-slide lines were written while running
        for path, message in batch.failures:
            click.echo(f"wsiseg: error: {path.name}: {as_flags(message)}", err=True)
    click.echo(f"wsiseg segment: {batch.summary()}; output: {out}")
    if batch.failures:
        sys.exit(1)
