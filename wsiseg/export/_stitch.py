"""Union of pixel-edge polygons that meet along block borders, by cancelling shared edges.

GEOS unions (OverlayNG, buffer) place every hole of the result with a scan over the shell, which grows
quadratically for slide-wide regions with thousands of holes. Pieces traced in different blocks only
share edges that lie on block-border lines, so their union is simpler: orient every outline with the
interior on its left, split border-line segments into unit edges, drop edges present in both directions
(the shared ones), and chain what is left into rings, turning right at pinch points (where a region
touches itself at a corner) so that a hole touches its shell at that point instead of the shell
touching itself. Positive rings are shells, negative ones holes.
Everything runs in numpy (connected components and list ranking on the successor graph).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def _edges(outlines: list[Any], block_size: int, origin: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges (start, end) ``(n, 2)`` each, int64, interior on the left; border-line segments
    (``origin + k * block_size``) split into unit edges."""
    starts, ends = [], []
    for outline in outlines:
        ring = np.asarray(outline.exterior.coords)
        if _signed_area(ring) < 0:
            ring = ring[::-1]
        ring = np.rint(ring).astype(np.int64)
        a, b = ring[:-1], ring[1:]
        vertical = a[:, 0] == b[:, 0]
        on_border = np.where(vertical, (a[:, 0] - origin[0]) % block_size == 0,
                             (a[:, 1] - origin[1]) % block_size == 0)
        length = np.abs(b - a).sum(axis=1)
        split = on_border & (length > 1)
        keep = ~split
        starts.append(a[keep])
        ends.append(b[keep])
        if split.any():
            sa, sb, sl = a[split], b[split], length[split]
            step = (sb - sa) // sl[:, None]
            offsets = np.arange(int(sl.sum())) - np.repeat(np.cumsum(sl) - sl, sl)
            unit_start = np.repeat(sa, sl, axis=0) + np.repeat(step, sl, axis=0) * offsets[:, None]
            starts.append(unit_start)
            ends.append(unit_start + np.repeat(step, sl, axis=0))
    return np.concatenate(starts), np.concatenate(ends)


def stitch(outlines: list[Any], block_size: int, origin: tuple[int, int] = (0, 0)) -> Any | None:
    """The union of hole-free, non-overlapping integer polygons that share edges only on block-border
    lines (``origin + k * block_size`` along each axis; ``origin`` = (x, y)), as a Polygon; None when it
    is not a single valid polygon (the caller then falls back to a GEOS union)."""
    start, end = _edges(outlines, block_size, origin)
    span = int(max(start.max(), end.max())) + 2
    lo = np.minimum(start[:, 0] * span + start[:, 1], end[:, 0] * span + end[:, 1])
    axis = (start[:, 0] == end[:, 0]).astype(np.int64)
    unit = np.abs(end - start).sum(axis=1) == 1
    key = np.where(unit, lo * 2 + axis, -1 - np.arange(len(lo)))  # only unit edges can be shared
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    alive = counts[inverse] == 1
    start, end = start[alive], end[alive]
    n = len(start)
    if n == 0:
        return None

    # successor of each edge: the edge starting where it ends; at a pinch (two choices) the right turn,
    # which keeps the two outside corners on different rings: the region is connected elsewhere, so one of
    # them is a hole touching the shell (or another hole) at that point, as OGC validity wants
    start_key = start[:, 0] * span + start[:, 1]
    end_key = end[:, 0] * span + end[:, 1]
    order = np.argsort(start_key, kind="stable")
    sorted_keys = start_key[order]
    first = np.searchsorted(sorted_keys, end_key, side="left")
    n_out = np.searchsorted(sorted_keys, end_key, side="right") - first
    if (n_out < 1).any() or (n_out > 2).any():
        return None
    succ = order[first]
    pinch = np.flatnonzero(n_out == 2)
    if len(pinch):
        d_in = end[pinch] - start[pinch]
        candidate = order[first[pinch] + 1]
        d_out = end[succ[pinch]] - start[succ[pinch]]
        cross = d_in[:, 0] * d_out[:, 1] - d_in[:, 1] * d_out[:, 0]
        succ[pinch] = np.where(cross < 0, succ[pinch], candidate)
    if len(np.unique(succ)) != n:  # not a permutation: the edges do not form rings
        return None

    graph = csr_matrix((np.ones(n, dtype=np.int8), (np.arange(n), succ)), shape=(n, n))
    n_rings, ring_id = connected_components(graph, directed=True, connection="weak")
    head = np.full(n_rings, n, dtype=np.int64)
    np.minimum.at(head, ring_id, np.arange(n))
    # list ranking: distance of each edge to its ring's last edge (the one before the head)
    nxt = succ.copy()
    nxt[np.isin(succ, head)] = -1
    rank = (nxt != -1).astype(np.int64)
    while (nxt != -1).any():
        has = nxt != -1
        rank[has] += rank[nxt[has]]
        nxt[has] = nxt[nxt[has]]
    position = np.bincount(ring_id)[ring_id] - 1 - rank
    ordered = np.lexsort((position, ring_id))
    ring_starts = np.searchsorted(ring_id[ordered], np.arange(n_rings))
    shells: list[np.ndarray] = []
    holes: list[np.ndarray] = []
    for r in range(n_rings):
        edges = ordered[ring_starts[r]: ring_starts[r + 1] if r + 1 < n_rings else n]
        points = start[edges].astype(np.float64)
        ring = np.concatenate([points, points[:1]])
        (shells if _signed_area(ring) > 0 else holes).append(ring)
    if len(shells) != 1:
        return None
    polygon = shapely.Polygon(shells[0], holes)
    return polygon if polygon.is_valid else None
