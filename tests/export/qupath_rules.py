"""Checks of one exported feature against what QuPath's own import code accepts (REFERENCE.md section 11,
measured in docs/qupath-import.md), with shapely as the independent parser."""

from __future__ import annotations

from typing import Any

import shapely
from shapely.geometry import shape


def checked_geometry(feature: dict[str, Any]) -> Any:
    """The feature's geometry, after asserting QuPath's rules: ``Polygon`` when it holds one polygon (QuPath
    0.5 fails the whole file on a one-part ``MultiPolygon``), ``MultiPolygon`` only for two or more, and
    valid as assembled (QuPath 0.6 fails the whole file on an invalid geometry), not only part by part."""
    geometry = feature["geometry"]
    parsed = shape(geometry)
    if geometry["type"] == "MultiPolygon":
        assert len(geometry["coordinates"]) >= 2, f"one-part MultiPolygon: {feature['id']}"
        assert isinstance(parsed, shapely.MultiPolygon)
    else:
        assert geometry["type"] == "Polygon" and isinstance(parsed, shapely.Polygon), geometry["type"]
    assert parsed.is_valid, (feature["id"], shapely.is_valid_reason(parsed))
    return parsed
