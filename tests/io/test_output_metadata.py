"""The typed output metadata: written and read in one place, versioned, older outputs still readable.

``tests/data/outputs/v1-ngff0{4,5}.zarr`` were written by wsiseg 0.1.0 before the metadata was typed
(metadata version 1: no ``metadata_version`` key): a 1536 x 1024 px synthetic slide at 0.5 um/px through
the pattern model (tiles of 256 px at 1 um/px, output grid 4 um/px), QC on, no preview.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from wsiseg.errors import OutputError
from wsiseg.io.omezarr import NgffVersion, open_segmentation, read_output_metadata
from wsiseg.io.output_metadata import METADATA_VERSION, OutputMetadata, SlideRecord
from wsiseg.synthetic import SYNTHETIC_CLASSES

LEGACY = Path(__file__).parents[1] / "data" / "outputs"


def _root_attrs(path: Path) -> dict[str, Any]:
    if (path / "zarr.json").exists():
        return dict(json.loads((path / "zarr.json").read_text())["attributes"])
    return dict(json.loads((path / ".zattrs").read_text()))


@pytest.fixture(params=["v1-ngff04.zarr", "v1-ngff05.zarr"])
def legacy(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A copy of an output written by wsiseg 0.1.0 (metadata version 1)."""
    copy = tmp_path / str(request.param)
    shutil.copytree(LEGACY / str(request.param), copy)
    return copy


def test_a_version_1_output_reads_completely(legacy: Path) -> None:
    seg = open_segmentation(legacy)
    meta = seg.metadata
    assert meta.metadata_version == 1 and meta.version == "0.1.0" and seg.finished
    assert seg.version is (NgffVersion.V04 if "04" in legacy.name else NgffVersion.V05)
    assert meta.slide == SlideRecord((0.5, 0.5), "slide.svs", meta.slide.path, 1536, 1024, "aperio", None,
                                     meta.slide.sha256_head)
    assert meta.slide.identity == meta.slide.sha256_head and len(meta.slide.identity) == 64
    assert meta.classes.names == SYNTHETIC_CLASSES.names and seg.classes.names == SYNTHETIC_CLASSES.names
    assert (meta.mpp, meta.analysis_mpp, meta.tiles_analysed, meta.tiles_total) == (4.0, 1.0, 9, 12)
    assert meta.model_name == "pattern" and meta.run_key == f"run {meta.run_id}"
    assert len(meta.run_id) == 32
    assert meta.params["tile_size"] == 256 and meta.qc_mode == "default" and meta.qc_excluded
    assert meta.artifact_areas_um2() == {"blur": 0.0, "pen": 0.0, "other": 0.0}
    assert meta.composition is not None and meta.composition["analysed_um2"] == pytest.approx(360448.0)
    assert not meta.resumed and meta.unreadable_tiles == () and "wall" in meta.timings
    # nothing is lost: written out again, it is the old attribute plus its version
    assert meta.to_json() == {"metadata_version": 1, **_root_attrs(legacy)["wsiseg"]}
    assert read_output_metadata(legacy) == meta
    assert "qc" in seg.label_images and seg.labels[0].shape == (128, 192)  # 768 x 512 um at 4 um/px


def test_a_version_1_output_exports_summarises_and_is_skipped(legacy: Path, tmp_path: Path) -> None:
    from wsiseg.export import export_geojson
    from wsiseg.export.composition import row_of
    from wsiseg.infer.options import SegmentOptions
    from wsiseg.infer.reference_models import PatternModel
    from wsiseg.infer.segment import RunStatus, segment_slide

    assert export_geojson(legacy, tmp_path / "classes.geojson").n_features == len(SYNTHETIC_CLASSES)
    qc = export_geojson(legacy, tmp_path / "qc.geojson", labels="qc")
    assert qc.n_features == 0 and qc.path.is_file()  # a clean synthetic slide: no artifacts
    row = row_of(legacy)
    assert (row.slide, row.model, row.version, row.qc_mode) == ("slide.svs", "pattern", "0.1.0", "default")
    model = PatternModel(SYNTHETIC_CLASSES, mpp=1.0, tile_size=256)
    before = _root_attrs(legacy)
    rerun = segment_slide(tmp_path / "gone.svs", model, legacy, SegmentOptions(), progress=False)
    assert rerun.status is RunStatus.SKIPPED and (rerun.n_tiles, rerun.n_tiles_total) == (9, 12)
    assert _root_attrs(legacy) == before  # a finished output is left as it is


def _full() -> OutputMetadata:
    slide = SlideRecord((0.25, 0.26), "a.svs", "/s/a.svs", 100, 80, "aperio", None, "ab" * 32)
    model = {"name": "pattern", "checkpoint": {"file": "m.wsiseg"}}
    meta = OutputMetadata(slide, SYNTHETIC_CLASSES, 2.0, 0.5, model, {"tile_size": 256}, "9.9", "f00d",
                          "2026-01-01T00:00:00+00:00")
    return meta.finish("2026-01-01T00:01:00+00:00", timings={"wall": 1.5}, resumed=True,
                       composition={"analysed_um2": 5.0, "classes": {}},
                       qc={"mode": "report", "excluded": False,
                           "areas": {"labels": {"pen": {"area_um2": 7.0}, "tissue": {"area_um2": 9.0}}}},
                       unreadable_tiles=[{"index": 3, "problem": "corrupt"}])


def test_the_current_version_round_trips() -> None:
    meta = _full()
    data = meta.to_json()
    assert data["metadata_version"] == METADATA_VERSION == 2
    assert data["unreadable_tiles"] == {"count": 1, "tiles": [{"index": 3, "problem": "corrupt"}]}
    assert OutputMetadata.from_json(json.loads(json.dumps(data)), "x.zarr") == meta
    assert (meta.model_name, meta.run_key, meta.qc_mode) == ("m.wsiseg", "run f00d", "report")
    assert not meta.qc_excluded
    assert meta.artifact_areas_um2() == {"pen": 7.0}
    unfinished = OutputMetadata(meta.slide, meta.classes, 2.0)
    assert "timings" not in unfinished.to_json() and unfinished.finished is None


def test_the_minimal_record_reads_with_defaults() -> None:
    """Hand-made or very old outputs: only the classes and the slide's resolution are needed."""
    slide = {"mpp": [0.5, 0.5], "path": "/x/s.svs"}
    meta = OutputMetadata.from_json({"classes": SYNTHETIC_CLASSES.to_dict(), "slide": slide}, "m")
    assert (meta.metadata_version, meta.finished, meta.slide.name) == (1, None, "s.svs")
    assert meta.slide.width0 is None
    assert (meta.model_name, meta.run_key, meta.qc_mode, meta.artifact_areas_um2()) == ("", "", "", None)


@pytest.mark.parametrize(("data", "message"), [
    ([], "not a mapping"),
    ({"slide": {"mpp": [0.5, 0.5]}}, "malformed wsiseg segmentation metadata (KeyError: 'classes')"),
    ({"classes": SYNTHETIC_CLASSES.to_dict(), "slide": {}}, "malformed"),
    ({"classes": SYNTHETIC_CLASSES.to_dict(), "slide": {"mpp": [1, 1]}, "model": [1]}, "expected a mapping"),
    ({"metadata_version": 3}, "written by a newer wsiseg (metadata version 3; this one reads up to 2)"),
])
def test_bad_metadata_is_one_line(data: Any, message: str) -> None:
    with pytest.raises(OutputError) as info:
        OutputMetadata.from_json(data, "out.zarr")
    text = str(info.value)
    assert message in text and "\n" not in text and text.startswith("out.zarr")
