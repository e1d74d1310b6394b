"""Label raster -> exact pixel-edge polygons, block by block, with regions that cross blocks merged.

The label array is read in ``block_size x block_size`` blocks. In each block every 4-connected region of
equal label value becomes one polygon (rasterio/GDAL polygonize: edges on pixel borders, holes as interior
rings). A region that does not reach an inner block border is complete and is emitted at once; pieces that
reach one are joined through a union-find over the pixels on both sides of the border and merged as soon
as no later block can touch them, i.e. after the block row in which the region ends: their hole-free
outlines are stitched along the shared border edges (:mod:`wsiseg.export._stitch`) and the pieces' holes,
which never reach a block border, are carried over unchanged. Memory is bounded by one block, one row of
label values the width of the slide, and the regions that cross the current block-row border (a
slide-wide region is held until its last block row: it is one polygon of the output).

With ``split_size`` the map is first cut into split tiles, traced one after the other as independent
maps (blocks start at each tile's corner; nothing is joined across tile borders). A region larger than
a tile then comes out as one piece per tile, flagged ``split``, and memory holds at most the open
regions of one tile: a class percolating through a 40k x 40k map no longer has to be held whole.

Optional simplification (``simplify_px`` > 0) runs per block on the whole coverage of the block (all
regions, including value 0) with :func:`shapely.coverage_simplify` and the block outline kept fixed, so
neighbouring regions keep identical shared edges (no gaps, no overlaps) and pieces still join exactly at
block borders. Its tolerance is that of coverage simplification (Visvalingam-Whyatt): roughly the square
root of the area of the triangles removed, in pixels of the traced level.

All coordinates here are pixels of the traced level; :mod:`wsiseg.export.exporter` scales, shifts and
clips them to the chosen frame of slide level 0 (``coverage`` tells which pixels lie inside).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from skimage.measure import label as connected_components

from wsiseg.export._stitch import stitch
from wsiseg.io.arrays import LevelArray

#: Default block side in pixels of the traced level.
DEFAULT_BLOCK_SIZE = 2048
#: Default side of the split tiles of ``export_geojson`` in pixels of the traced level: larger regions
#: are written as one piece per tile (16 mm at the usual 2 um/px output), which bounds export memory.
DEFAULT_SPLIT_SIZE = 8192
#: Regions whose pieces have more vertices are dissolved with union_all instead of buffer(0).
_BUFFER_MAX_VERTICES = 250_000


@dataclass
class RegionBatch:
    """Complete regions, as parallel arrays (one entry per region; coordinates in pixels of the level).

    ``geometries``: shapely Polygons; ``values``: label value (class index + 1); ``pixel_count``: area in
    pixels (exact, before any simplification); ``probability_sum``: sum over the region's pixels of the
    uint8 probability of its own class (``None`` without probabilities); ``first_pixel``: ``(n, 2)`` of
    ``(y, x)``, the region's first pixel in row-major order (stable across block sizes);
    ``from_shapely``: True where the geometry came out of coverage simplification, which the exporter
    re-checks with ``is_valid``. Exact pixel-edge polygons are valid by construction: GDAL's, and merged
    ones whose unioned outline is checked here (their holes are GDAL's, unchanged); the tests check it.
    ``area``: pixels of the region weighted by ``coverage`` (the part inside the exported area; equal
    to ``pixel_count`` without coverage), and ``probability_sum`` is weighted the same way;
    ``split``: True for a piece of a region that continues in a neighbouring split tile; ``tile``: the
    ``(y, x)`` origin of the split tile the batch belongs to (batches come tile by tile);
    ``probability_max``: the largest uint8 probability of its own class over the region's pixels (inside
    the exported area), ``None`` without probabilities.
    """

    geometries: np.ndarray
    values: np.ndarray
    pixel_count: np.ndarray
    probability_sum: np.ndarray | None
    first_pixel: np.ndarray
    from_shapely: np.ndarray
    area: np.ndarray
    split: np.ndarray
    tile: tuple[int, int] = (0, 0)
    probability_max: np.ndarray | None = None

    def select(self, keep: np.ndarray) -> RegionBatch:
        """The regions where ``keep`` (a boolean mask or indices)."""
        return RegionBatch(self.geometries[keep], self.values[keep], self.pixel_count[keep],
                           None if self.probability_sum is None else self.probability_sum[keep],
                           self.first_pixel[keep], self.from_shapely[keep], self.area[keep], self.split[keep],
                           self.tile, None if self.probability_max is None else self.probability_max[keep])

    def __len__(self) -> int:
        return len(self.geometries)


@dataclass
class _Group:
    """Pieces of one region that crosses block borders, gathered until it is complete.

    ``outlines`` are the pieces without their holes (or unions of them); ``holes`` the pieces' interior
    rings. A piece's holes never reach its block's border, so merging only has to union the outlines and
    the holes carry over unchanged, which keeps the union small for regions with many holes. ``original``
    is the single piece while the group has one member.
    """

    value: int
    members: list[int]
    outlines: list[Any]
    holes: list[Any]
    original: Any
    pixel_count: int
    probability_sum: float
    first_key: int
    area: float
    split: bool
    probability_max: int = 0


@dataclass
class _BlockPieces:
    ids: np.ndarray  # local component ids 1..n of the polygons below
    geometries: np.ndarray
    values: np.ndarray
    pixel_count: np.ndarray
    probability_sum: np.ndarray | None
    first_key: np.ndarray  # y * key_stride + x of the first pixel (global coordinates)
    area: np.ndarray  # pixels weighted by coverage (float)
    probability_max: np.ndarray | None = None  # uint8 probability of the own class, max over the pixels


@dataclass
class _UnionFind:
    parent: dict[int, int] = field(default_factory=dict)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:  # path compression
            self.parent[a], a = root, self.parent[a]
        return root


def _polygons_from_shapes(shapes: list[tuple[dict[str, Any], float]]) -> np.ndarray:
    """rasterio shapes (GeoJSON-like dicts of Polygons) -> shapely Polygons, built in one vectorised call."""
    rings = [ring for geom, _ in shapes for ring in geom["coordinates"]]
    ring_len = np.fromiter((len(r) for r in rings), np.int64, len(rings))
    n_rings = np.fromiter((len(geom["coordinates"]) for geom, _ in shapes), np.int64, len(shapes))
    coords = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), np.float64,
                         2 * int(ring_len.sum())).reshape(-1, 2)
    ring_offsets = np.concatenate([[0], np.cumsum(ring_len)])
    geom_offsets = np.concatenate([[0], np.cumsum(n_rings)])
    polygons = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, (ring_offsets, geom_offsets))
    return np.asarray(polygons)


def _first_keys(geometries: np.ndarray, key_stride: int) -> np.ndarray:
    """Row-major first pixel of each pixel-edge polygon as ``y * key_stride + x``.

    The first pixel's top-left corner is the vertex with the smallest (y, x): nothing lies above the top
    row of a region, and the leftmost pixel of that row starts a top edge and a left edge.
    """
    coords, index = shapely.get_coordinates(geometries, return_index=True)
    keys = np.rint(coords[:, 1]).astype(np.int64) * key_stride + np.rint(coords[:, 0]).astype(np.int64)
    out = np.full(len(geometries), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(out, index, keys)
    return out


def _vectorise_block(labels: np.ndarray, probabilities: np.ndarray | None, x: int, y: int,
                     selected: np.ndarray, simplify_px: float, key_stride: int,
                     weights: np.ndarray | None) -> tuple[np.ndarray, _BlockPieces]:
    """Components and polygons of one block at (x, y) of the level. Returns (component ids, pieces).

    ``weights``: ``(h, w)`` fraction of each pixel inside the exported area, or None (all inside)."""
    components = connected_components(labels, background=-1, connectivity=1).astype(np.int32)
    n = int(components.max())
    flat = components.ravel()
    pixel_count = np.bincount(flat, minlength=n + 1)
    area = (pixel_count.astype(np.float64) if weights is None
            else np.bincount(flat, weights=weights.ravel(), minlength=n + 1))
    probability_sum = probability_max = None
    if probabilities is not None:
        own = np.zeros(labels.shape, dtype=np.uint8)  # each pixel's probability of its own class
        for c in range(min(probabilities.shape[0], 255)):
            np.copyto(own, probabilities[c], where=labels == c + 1)
        own_weighted = own.ravel() if weights is None else own.ravel() * weights.ravel()
        probability_sum = np.bincount(flat, weights=own_weighted, minlength=n + 1)
        probability_max = np.zeros(n + 1, dtype=np.uint8)
        inside = own.ravel() if weights is None else np.where(weights.ravel() > 0, own.ravel(), 0)
        np.maximum.at(probability_max, flat, inside)

    keep = selected[labels]
    mask = None if simplify_px > 0 else keep
    shapes = list(rasterio.features.shapes(components, mask=mask, connectivity=4,
                                           transform=Affine.translation(x, y)))
    if not shapes:
        empty = np.empty(0, dtype=np.int64)
        return components, _BlockPieces(empty, np.empty(0, dtype=object), empty, empty, None, empty,
                                        np.empty(0, dtype=np.float64))
    ids = np.fromiter((int(v) for _, v in shapes), np.int64, len(shapes))
    geometries = _polygons_from_shapes(shapes)
    if len(np.unique(ids)) != len(ids):  # GDAL split a 4-connected component (not expected): rejoin it
        order = np.unique(ids)
        geometries = np.array([shapely.union_all(geometries[ids == i]) for i in order], dtype=object)
        ids = order
    first_key = _first_keys(geometries, key_stride)
    fy, fx = np.divmod(first_key, key_stride)
    values = labels[fy - y, fx - x].astype(np.int64)
    if simplify_px > 0:
        geometries = np.asarray(shapely.coverage_simplify(geometries, simplify_px, simplify_boundary=False))
        wanted = selected[values]
        ids, geometries = ids[wanted], geometries[wanted]
        values, first_key = values[wanted], first_key[wanted]
    return components, _BlockPieces(
        ids=ids, geometries=geometries, values=values, pixel_count=pixel_count[ids],
        probability_sum=None if probability_sum is None else probability_sum[ids], first_key=first_key,
        area=area[ids], probability_max=None if probability_max is None else probability_max[ids],
    )


def _links(ids_a: np.ndarray, values_a: np.ndarray, ids_b: np.ndarray, values_b: np.ndarray,
           selected: np.ndarray) -> np.ndarray:
    """Unique (a, b) global id pairs of 4-adjacent pixels across a border with the same selected value."""
    same = (values_a == values_b) & selected[values_a]
    if not same.any():
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.stack([ids_a[same], ids_b[same]], axis=1), axis=0)


def coverage_fractions(edges: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fraction inside ``[low, high]`` of each pixel along one axis, given its ``n + 1`` pixel-edge
    positions (increasing, in any unit): ``(n,)`` floats 0..1."""
    start, end = edges[:-1], edges[1:]
    inside = np.minimum(end, high) - np.maximum(start, low)
    fraction: np.ndarray = np.clip(inside / np.maximum(end - start, 1e-300), 0.0, 1.0)
    return fraction


@dataclass(frozen=True)
class _Tile:
    """One split tile: origin and size in pixels of the level."""

    y: int
    x: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def right(self) -> int:
        return self.x + self.width


def vectorise_labels(labels: LevelArray, *, probabilities: LevelArray | None = None,
                     values: Sequence[int] | None = None, block_size: int = DEFAULT_BLOCK_SIZE,
                     simplify_px: float = 0.0, split_size: int = 0,
                     coverage: tuple[np.ndarray, np.ndarray] | None = None) -> Iterator[RegionBatch]:
    """Yield every 4-connected region of equal non-zero label value as one polygon, in batches.

    ``labels``: ``(H, W)`` integer array (zarr or numpy; read in blocks); ``probabilities``: optional
    ``(C, H, W)`` uint8 array whose channel ``value - 1`` is the probability of that label value;
    ``values``: label values to trace (default: all non-zero values up to 255); ``block_size``: block
    side in pixels (the result does not depend on it without simplification); ``simplify_px``: coverage
    simplification tolerance in pixels (0 = exact pixel edges).

    ``split_size`` (pixels, 0 = never): the map is traced in independent split tiles of this side,
    row by row, each in blocks starting at its own corner, and a region that crosses a tile border is
    yielded as one piece per tile (``RegionBatch.split``), cut along that border. Memory then holds at
    most one tile's regions, whatever the slide size and however far a class percolates; without it a
    slide-wide region is held whole until its last block row. Pieces do not depend on ``block_size``.

    ``coverage``: ``(per column (W,), per row (H,))`` fractions 0..1 of each pixel inside the area to
    export (e.g. the slide, which the label grid overhangs): a pixel's weight is their product. Regions
    are measured with these weights (``RegionBatch.area``, ``probability_sum``) and pixels of weight 0
    are not traced, so polygons reach at most into the partly covered pixels; geometries are not cut
    here (the exporter clamps them).
    """
    if block_size < 2:
        raise ValueError("block_size must be at least 2")
    if split_size < 0:
        raise ValueError("split_size must be 0 (no split) or positive")
    height, width = int(labels.shape[0]), int(labels.shape[1])
    if coverage is not None and (len(coverage[0]) != width or len(coverage[1]) != height):
        raise ValueError("coverage must hold one fraction per column and one per row")
    selected = np.zeros(256, dtype=bool)
    selected[list(values) if values is not None else list(range(1, 256))] = True
    selected[0] = False
    side = split_size if split_size > 0 else max(height, width, 1)
    for ty in range(0, height, side):
        for tx in range(0, width, side):
            tile = _Tile(ty, tx, min(side, height - ty), min(side, width - tx))
            yield from _vectorise_tile(labels, probabilities, tile, (height, width), selected,
                                       min(block_size, side), simplify_px, coverage)


def _vectorise_tile(labels: LevelArray, probabilities: LevelArray | None, tile: _Tile,
                    shape: tuple[int, int], selected: np.ndarray, block_size: int, simplify_px: float,
                    coverage: tuple[np.ndarray, np.ndarray] | None) -> Iterator[RegionBatch]:
    """The regions of one split tile (see :func:`vectorise_labels`); coordinates stay global."""
    return _TileTracer(labels, probabilities, tile, shape, selected, block_size, simplify_px,
                       coverage).regions()


class _TileTracer:
    """Traces one split tile block by block, row by row. Pieces that touch no inner block border are
    regions at once; the others are held as groups, joined across block borders (union-find over piece
    ids), and emitted when their block row closes without them reaching its bottom border."""

    def __init__(self, labels: LevelArray, probabilities: LevelArray | None, tile: _Tile,
                 shape: tuple[int, int], selected: np.ndarray, block_size: int, simplify_px: float,
                 coverage: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.labels, self.probabilities, self.tile, self.shape = labels, probabilities, tile, shape
        self.selected, self.block_size, self.simplify_px = selected, block_size, simplify_px
        self.coverage = coverage
        self.key_stride = shape[1] + 1
        self.uf = _UnionFind()
        self.groups: dict[int, _Group] = {}
        self.next_id = 0
        # global piece ids and label values along the bottom border of the previous / current block row
        self.prev_bottom = (np.zeros(tile.width, dtype=np.int64), np.zeros(tile.width, dtype=np.int64))
        self.bottom = self.prev_bottom

    def regions(self) -> Iterator[RegionBatch]:
        tile = self.tile
        for y in range(tile.y, tile.bottom, self.block_size):
            h = min(self.block_size, tile.bottom - y)
            yield from self._block_row(y, h)
            batch = self._close_row(last_row=y + h >= tile.bottom)
            if batch is not None:
                yield batch
            self.prev_bottom = self.bottom

    def _block_row(self, y: int, h: int) -> Iterator[RegionBatch]:
        tile = self.tile
        self.bottom = (np.zeros(tile.width, dtype=np.int64), np.zeros(tile.width, dtype=np.int64))
        left: tuple[np.ndarray, np.ndarray] | None = None
        for x in range(tile.x, tile.right, self.block_size):
            w = min(self.block_size, tile.right - x)
            block, weights = self._read(y, x, h, w)
            probs = (None if self.probabilities is None
                     else np.asarray(self.probabilities[:, y:y + h, x:x + w]))
            components, pieces = _vectorise_block(block, probs, x, y, self.selected, self.simplify_px,
                                                  self.key_stride, weights)
            base = self.next_id
            self.next_id += int(components.max()) + 1
            at_border = self._at_inner_border(components, x, y, w, h)[pieces.ids]
            split = _crossing(self.labels, block, components, int(components.max()) + 1, x, y, tile,
                              self.shape, self.selected)[pieces.ids]
            done = ~at_border
            if done.any():
                yield self._regions_of(pieces, done, split)
            self._hold(pieces, np.flatnonzero(at_border), split, base)
            ids = components.astype(np.int64) + base
            self._link(ids, block, x, y, w, left)
            left = ids[:, -1], block[:, -1].astype(np.int64)
            self.bottom[0][x - tile.x:x - tile.x + w] = ids[-1, :]
            self.bottom[1][x - tile.x:x - tile.x + w] = block[-1, :]

    def _read(self, y: int, x: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The uint8 labels of a block and its pixel weights (None: all inside the exported area); pixels
        of weight 0 read as 0 (not traced)."""
        block = np.asarray(self.labels[y:y + h, x:x + w])
        if block.dtype != np.uint8:
            block = block.astype(np.uint8)
        if self.coverage is None:
            return block, None
        cover_x, cover_y = self.coverage[0][x:x + w], self.coverage[1][y:y + h]
        if not ((cover_x < 1).any() or (cover_y < 1).any()):
            return block, None
        weights = cover_y[:, None] * cover_x[None, :]
        return np.where(weights > 0, block, 0).astype(np.uint8), weights

    def _at_inner_border(self, components: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Per component of a block: does it touch a block border inside the tile?"""
        tile = self.tile
        inner = np.zeros(int(components.max()) + 1, dtype=bool)
        if x > tile.x:
            inner[components[:, 0]] = True
        if x + w < tile.right:
            inner[components[:, -1]] = True
        if y > tile.y:
            inner[components[0, :]] = True
        if y + h < tile.bottom:
            inner[components[-1, :]] = True
        return inner

    def _regions_of(self, pieces: _BlockPieces, done: np.ndarray, split: np.ndarray) -> RegionBatch:
        """The pieces ``done`` of a block, which are whole regions."""
        return RegionBatch(
            geometries=pieces.geometries[done], values=pieces.values[done],
            pixel_count=pieces.pixel_count[done],
            probability_sum=None if pieces.probability_sum is None else pieces.probability_sum[done],
            first_pixel=np.stack(np.divmod(pieces.first_key[done], self.key_stride), axis=1),
            from_shapely=np.full(int(done.sum()), self.simplify_px > 0),
            area=pieces.area[done], split=split[done], tile=(self.tile.y, self.tile.x),
            probability_max=None if pieces.probability_max is None else pieces.probability_max[done],
        )

    def _hold(self, pieces: _BlockPieces, indices: np.ndarray, split: np.ndarray, base: int) -> None:
        """Hold the pieces at ``indices`` as groups of their own, to be joined with their neighbours."""
        sums, maxes = pieces.probability_sum, pieces.probability_max
        for i in indices:
            gid = int(pieces.ids[i]) + base
            self.uf.parent[gid] = gid
            piece = pieces.geometries[i]
            self.groups[gid] = _Group(
                value=int(pieces.values[i]), members=[gid],
                outlines=[shapely.Polygon(piece.exterior)], holes=list(piece.interiors), original=piece,
                pixel_count=int(pieces.pixel_count[i]),
                probability_sum=0.0 if sums is None else float(sums[i]),
                first_key=int(pieces.first_key[i]), area=float(pieces.area[i]), split=bool(split[i]),
                probability_max=0 if maxes is None else int(maxes[i]),
            )

    def _link(self, ids: np.ndarray, block: np.ndarray, x: int, y: int, w: int,
              left: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Join the block's pieces with those of equal value across its left and top borders."""
        tile = self.tile
        links = []
        if x > tile.x and left is not None:
            links.append(_links(left[0], left[1], ids[:, 0], block[:, 0].astype(np.int64), self.selected))
        if y > tile.y:
            above = slice(x - tile.x, x - tile.x + w)
            links.append(_links(self.prev_bottom[0][above], self.prev_bottom[1][above], ids[0, :],
                                block[0, :].astype(np.int64), self.selected))
        for pairs in links:
            for a, b in pairs.tolist():
                _union(self.uf, self.groups, a, b)

    def _close_row(self, *, last_row: bool) -> RegionBatch | None:
        """The held groups that cannot grow any more once a block row is done (those that do not reach
        its bottom border, or all of them after the last row), as one batch; None when there are none."""
        open_roots: set[int] = set()
        if not last_row:
            bottom_ids, bottom_values = self.bottom
            for gid in np.unique(bottom_ids[self.selected[bottom_values]]).tolist():
                if gid in self.uf.parent:
                    open_roots.add(self.uf.find(gid))
        finished = [root for root in self.groups if root not in open_roots]
        if not finished:
            return None
        done_groups = [self.groups.pop(root) for root in finished]
        for group in done_groups:
            for gid in group.members:
                del self.uf.parent[gid]
        batch = _finish_groups(done_groups, self.probabilities is not None, self.key_stride,
                               self.simplify_px > 0, self.block_size, (self.tile.x, self.tile.y))
        batch.tile = (self.tile.y, self.tile.x)
        return batch


def _crossing(labels: LevelArray, block: np.ndarray, components: np.ndarray, n_local: int, x: int, y: int,
              tile: _Tile, shape: tuple[int, int], selected: np.ndarray) -> np.ndarray:
    """Per local component: does it continue into a neighbouring split tile (same selected value on the
    other side of a tile border)? Reads the one-pixel strip beyond each tile border the block lies on."""
    crosses = np.zeros(n_local, dtype=bool)
    h, w = block.shape
    height, width = shape
    strips: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (edge values, neighbours, edge ids)
    if x == tile.x and x > 0:
        strips.append((block[:, 0], np.asarray(labels[y:y + h, x - 1]), components[:, 0]))
    if x + w == tile.right and tile.right < width:
        strips.append((block[:, -1], np.asarray(labels[y:y + h, x + w]), components[:, -1]))
    if y == tile.y and y > 0:
        strips.append((block[0, :], np.asarray(labels[y - 1, x:x + w]), components[0, :]))
    if y + h == tile.bottom and tile.bottom < height:
        strips.append((block[-1, :], np.asarray(labels[y + h, x:x + w]), components[-1, :]))
    for edge, neighbours, ids in strips:
        same = (edge == neighbours.astype(edge.dtype)) & selected[edge]
        crosses[ids[same]] = True
    return crosses


def _union(uf: _UnionFind, groups: dict[int, _Group], a: int, b: int) -> None:
    ra, rb = uf.find(a), uf.find(b)
    if ra == rb:
        return
    ga, gb = groups[ra], groups[rb]
    if len(ga.members) < len(gb.members):
        ra, rb, ga, gb = rb, ra, gb, ga
    uf.parent[rb] = ra
    ga.members.extend(gb.members)
    ga.outlines.extend(gb.outlines)
    ga.holes.extend(gb.holes)
    ga.original = None
    ga.pixel_count += gb.pixel_count
    ga.probability_sum += gb.probability_sum
    ga.probability_max = max(ga.probability_max, gb.probability_max)
    ga.first_key = min(ga.first_key, gb.first_key)
    ga.area += gb.area
    ga.split = ga.split or gb.split
    del groups[rb]


def _dissolve(outlines: list[Any], block_size: int, simplified: bool, origin: tuple[int, int]) -> Any:
    """Union of edge-sharing, non-overlapping polygons. Exact pixel-edge outlines are stitched in numpy
    (:mod:`wsiseg.export._stitch`: linear, where GEOS places holes quadratically). Otherwise, up to
    :data:`_BUFFER_MAX_VERTICES`, GEOS buffer(0) of their collection dissolves the shared edges several
    times faster than union_all; larger ones use union_all (OverlayNG), as does a buffer that lost area."""
    if len(outlines) == 1:
        return outlines[0]
    if not simplified:
        stitched = stitch(outlines, block_size, origin)
        if stitched is not None:
            return stitched
    array = np.array(outlines, dtype=object)
    if int(shapely.get_num_coordinates(array).sum()) > _BUFFER_MAX_VERTICES:
        return shapely.union_all(array)
    dissolved = shapely.buffer(shapely.GeometryCollection(outlines), 0.0)
    expected = float(np.sum(shapely.area(array)))
    if abs(dissolved.area - expected) > 1e-6 * max(expected, 1.0):
        return shapely.union_all(outlines)
    return dissolved


def _merge(group: _Group, simplified: bool, block_size: int, origin: tuple[int, int]) -> Any:
    """The region of a group: the union of its outlines (they share exact edges on block borders) with
    the pieces' holes put back. On pixel edges the collinear vertices left where pieces met are dropped
    (so the result does not depend on the block size); simplified coverages keep them, because a
    neighbour may share such a vertex and dropping it on one side only opens slivers once coordinates are
    rounded. Valid by construction (GEOS buffer output; removing a vertex inside a straight run keeps the
    point set); ``export_label_source(check_validity=True)`` verifies it."""
    outline = _dissolve(group.outlines, block_size, simplified, origin)
    if not isinstance(outline, shapely.Polygon):  # not expected (pieces share edges); the general way
        holes = shapely.union_all(shapely.polygons(np.array(group.holes, dtype=object)))
        return shapely.difference(shapely.union_all(group.outlines), holes)
    rings = [outline.exterior, *outline.interiors]
    if not simplified:
        rings = [_drop_collinear(np.asarray(r.coords)) for r in rings]
    return shapely.Polygon(rings[0], [*rings[1:], *group.holes])


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Remove the vertices of a closed axis-aligned ring ``(n, 2)`` that lie inside straight runs."""
    points = ring[:-1]
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    inside_run = (((before[:, 0] == points[:, 0]) & (points[:, 0] == after[:, 0]))
                  | ((before[:, 1] == points[:, 1]) & (points[:, 1] == after[:, 1])))
    kept = points[~inside_run]
    return np.concatenate([kept, kept[:1]])


def _finish_groups(finished: list[_Group], with_probabilities: bool, key_stride: int,
                   simplified: bool, block_size: int, origin: tuple[int, int]) -> RegionBatch:
    geometries = np.empty(len(finished), dtype=object)
    for i, group in enumerate(finished):
        if group.original is not None:
            geometries[i] = group.original
        else:
            geometries[i] = _merge(group, simplified, block_size, origin)
    return RegionBatch(
        geometries=geometries,
        values=np.array([g.value for g in finished], dtype=np.int64),
        pixel_count=np.array([g.pixel_count for g in finished], dtype=np.int64),
        probability_sum=np.array([g.probability_sum for g in finished]) if with_probabilities else None,
        first_pixel=np.stack(np.divmod(np.array([g.first_key for g in finished], dtype=np.int64), key_stride),
                             axis=1),
        # merged pixel-edge regions were checked in _merge (outline) and hold GDAL's holes unchanged
        from_shapely=np.full(len(finished), simplified),
        area=np.array([g.area for g in finished], dtype=np.float64),
        split=np.array([g.split for g in finished], dtype=bool),
        probability_max=(np.array([g.probability_max for g in finished], dtype=np.uint8)
                         if with_probabilities else None),
    )
