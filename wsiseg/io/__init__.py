"""wsiseg's own file formats, below every package that reads or writes them (torch-free).

- :mod:`wsiseg.io.omezarr`: the segmentation output (OME-Zarr probability and label pyramids): writer and
  reader.
- :mod:`wsiseg.io.geojson_read`: GeoJSON in (QuPath annotations -> regions, masks, label maps).
- :mod:`wsiseg.io.geojson_write`: GeoJSON out (regions -> QuPath-ready features, streamed).
- :mod:`wsiseg.io.atomic`: files that appear whole or not at all.
- :mod:`wsiseg.io.hashing`: the sha256 of a file (weights checksums in provenance and the registry).
- :mod:`wsiseg.io.arrays`: ``LevelArray``, the array interface the reader hands out and the exporter reads.

Import the submodule you need: this face imports nothing, so ``import wsiseg.io.atomic`` does not load
zarr, and ``wsiseg.export``/``wsiseg.slide`` load zarr only when they open a segmentation.
"""
