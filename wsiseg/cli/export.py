"""``wsiseg export``: a segmentation's labels -> QuPath GeoJSON."""

from __future__ import annotations

from pathlib import Path

import click

from wsiseg.export import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PARTS,
    DEFAULT_SPLIT_SIZE,
    CoordinateFrame,
    ObjectType,
    export_geojson,
)


def _class_names(values: tuple[str, ...]) -> list[str] | None:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


@click.command(name="export")
@click.argument("segmentation", type=click.Path(path_type=Path))
@click.option("--geojson", "geojson_path", type=click.Path(path_type=Path),
              help="Output file (.geojson, .json, or .geojson.gz for gzip); coordinates in slide level-0 "
                   "pixels of --frame, clipped to the slide.")
@click.option("--spatialdata", "spatialdata_path", type=click.Path(path_type=Path),
              help="Write a SpatialData store instead (scverse; needs pip install 'wsiseg[spatialdata]'): "
                   "labels, probabilities (--probabilities), class regions, the --objects as shapes and "
                   "their measurements as a table, in micrometres aligned with the slide.")
@click.option("--probabilities", "probability_classes", default="all", show_default=True,
              metavar="all|none|CLASS[,CLASS...]", help="With --spatialdata: the probability channels kept.")
@click.option("--overwrite", is_flag=True, help="With --spatialdata: replace an existing store.")
@click.option("--frame", type=click.Choice([f.value for f in CoordinateFrame]), default="qupath",
              show_default=True,
              help="Coordinate frame: QuPath's (OpenSlide level 0 minus the corner of the slide's "
                   "openslide.bounds rectangle, which QuPath crops to) or OpenSlide's uncropped level 0. "
                   "The same for slides without bounds.")
@click.option("--labels", "label_image", type=click.Choice(["classes", "qc"]), default="classes",
              show_default=True,
              help="What to export: the classes, or the QC artifacts (annotations 'Artifact: pen', "
                   "'Artifact: blur' to review in QuPath; `segment --mask` takes the edited file back).")
@click.option("--level", type=int, default=None, help="Pyramid level to trace (default 0, the exact labels).")
@click.option("--mpp", type=float, default=None,
              help="Trace the coarsest level not coarser than this many microns per pixel.")
@click.option("--simplify", "simplify_um", type=float, default=0.0, show_default=True,
              help="Simplification tolerance in micrometres (0 = exact pixel edges). Neighbouring classes "
                   "keep shared edges, geometries stay valid.")
@click.option("--min-area", "min_area_um2", type=float, default=0.0, show_default=True,
              help="Drop regions smaller than this many square micrometres.")
@click.option("--classes", "class_names", multiple=True,
              help="Classes to export (repeat or comma-separate; default all).")
@click.option("--objects", "object_classes", multiple=True, metavar="CLASS[,CLASS...]",
              help="Export every connected region of these classes as one object (traced whole, with area, "
                   "perimeter, equivalent diameter, solidity, circularity, mean/max probability) and the "
                   "object table <name>.objects.csv beside the file; --min-area drops smaller objects.")
@click.option("--object-type", type=click.Choice([t.value for t in ObjectType]), default=None,
              help="QuPath object type of the features [default: annotation; detection with --objects].")
@click.option("--split-regions", is_flag=True,
              help="One feature per connected region instead of one MultiPolygon per class.")
@click.option("--split-size", type=int, default=DEFAULT_SPLIT_SIZE, show_default=True,
              help="Trace the map in independent tiles of this many pixels (0 = one tile): a region larger "
                   "than a tile is written as one piece per tile, cut along tile borders; bounds memory.")
@click.option("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, show_default=True,
              help="Block side in pixels read at a time (memory ~ block-size^2 x (classes + 13) bytes).")
@click.option("--max-parts", type=click.IntRange(min=1), default=DEFAULT_MAX_PARTS, show_default=True,
              help="Polygons per class feature at most; a class with more regions in one split tile "
                   "is "
                   "written as several features (QuPath imports several features faster than one huge one).")
@click.option("--max-file-mb", type=click.FloatRange(min=0), default=DEFAULT_MAX_BYTES / 1e6,
              show_default=True,
              help="Uncompressed megabytes per file at most (0 = no limit); a larger export continues in "
                   "<name>-002.geojson, ... (QuPath holds a whole file in memory while importing it).")
@click.option("--check-validity", is_flag=True,
              help="Run shapely's is_valid on every geometry and on every feature as assembled (exact "
                   "polygons are valid by construction).")
def command(segmentation: Path, geojson_path: Path, frame: str, level: int | None, mpp: float | None,
            simplify_um: float, min_area_um2: float, class_names: tuple[str, ...], object_type: str,
            split_regions: bool, split_size: int, block_size: int, max_parts: int, max_file_mb: float,
            check_validity: bool, label_image: str, object_classes: tuple[str, ...],
            spatialdata_path: Path | None, probability_classes: str, overwrite: bool) -> None:
    """Export the class regions of SEGMENTATION (an OME-Zarr written by `wsiseg segment`) as GeoJSON
    that QuPath imports (File > Import objects, or drag and drop)."""
    objects = _class_names(object_classes)
    if objects and class_names:
        raise click.UsageError("--objects names the classes exported as objects; drop --classes")
    if (geojson_path is None) == (spatialdata_path is None):
        raise click.UsageError("give one output: --geojson FILE or --spatialdata STORE.zarr")
    if spatialdata_path is not None:
        from wsiseg.export.spatialdata import export_spatialdata

        chosen = (None if probability_classes == "all" else [] if probability_classes == "none"
                  else _class_names((probability_classes,)) or [])
        out = export_spatialdata(segmentation, spatialdata_path, objects=objects or (), probabilities=chosen,
                                 min_area_um2=min_area_um2, overwrite=overwrite)
        click.echo(f"wrote {out}: SpatialData (labels, probabilities, regions"
                   + (", objects and their measurements table" if objects else "") + "; micrometres)")
        return
    default = ObjectType.DETECTION if objects else ObjectType.ANNOTATION
    kind = ObjectType(object_type) if object_type else default
    result = export_geojson(
        segmentation, geojson_path, level=level, mpp=mpp, simplify_um=simplify_um, min_area_um2=min_area_um2,
        classes=objects or _class_names(class_names), object_type=kind, split_regions=split_regions,
        block_size=block_size, check_validity=check_validity, frame=CoordinateFrame(frame),
        split_size=split_size, max_parts=max_parts, max_bytes=round(max_file_mb * 1e6), labels=label_image,
        objects=bool(objects),
    )
    per_class = ", ".join(f"{name} {n}" for name, n in result.regions_per_class.items())
    ox, oy = result.origin
    where = (f"{result.frame.value} frame (OpenSlide level 0 minus ({ox}, {oy}))" if (ox, oy) != (0, 0)
             else f"{result.frame.value} frame (= OpenSlide level 0)")
    notes = [f"{result.n_clipped} clipped to the slide" if result.n_clipped else "",
             f"{result.n_split} region pieces cut at {result.split_size} px tiles" if result.n_split else "",
             f"{result.n_repaired} geometries repaired" if result.n_repaired else ""]
    files = (f" (and {', '.join(p.name for p in result.paths[1:])}: {len(result.paths)} files of at most "
             f"{max_file_mb:g} MB; import them all)" if len(result.paths) > 1 else "")
    click.echo(
        f"wrote {result.path}{files}: {result.n_features} features, {result.n_regions} regions "
        f"({per_class}), "
        f"{result.n_vertices} vertices, {result.n_bytes / 1e6:.2f} MB from level {result.level} "
        f"({result.mpp:.4g} um/px) in {result.seconds:.1f} s; coordinates in the {where}"
        + "".join(f"; {n}" for n in notes if n)
        + (f"; object table {result.table}" if result.table else "")
    )
