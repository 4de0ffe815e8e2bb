"""The 4-connected regions of a boolean raster as polygons, traced with numpy: the rings GDAL's
polygonize gives (``rasterio.features.shapes`` with ``connectivity=4``; a test checks they are
the same), in a few array passes over the raster and work in proportion to the rings' corners
after that, with no Python object per vertex or per polygon.

Coordinates are pixel corners (x = column, y = row). The boundary between region and
background runs along grid lines, directed so that the region lies on its left (in these y-down
coordinates). At each grid point the 2x2 pixels around it (a 4-bit code) say where the
boundary goes: straight through, a turn (a *corner*: a ring's vertex), or, where two region
pixels meet only at a corner (a *saddle*), two ways. A ring is the cycle of its corners, each
followed by the next corner along its direction: the next or previous corner in row order
(east, west) or in column order (south, north). At a saddle the ring turns towards its own
pixel when the two pixels are different regions (4-connectivity) and towards the other one
when they are the same region, so that rings never touch themselves and the polygons are valid
as OGC defines them (a hole may touch its shell at a point), as GDAL's are. Shells run one way
(negative shoelace area here), holes the other; each ring belongs to the region of the pixel on
its left, regions being labelled through runs of pixels along rows (4-connected runs of
adjacent rows are one region).

``cuts``: every grid point of the first and last grid lines (a strip's top and bottom) that the
boundary passes is a vertex, so the pieces of one region in adjacent strips share their border
edges vertex for vertex and their union is a coverage union.
"""

from __future__ import annotations

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Grid point codes: TL 1, TR 2, BL 4, BR 8 (the pixels up-left, up-right, down-left,
# down-right of the point). Directions: 0 east (+x), 1 south (+y), 2 west, 3 north; a left turn
# is d + 3 (mod 4), a right turn d + 1.
_CODES = np.arange(16)
_TL, _TR, _BL, _BR = (_CODES & 1) > 0, (_CODES & 2) > 0, (_CODES & 4) > 0, (_CODES & 8) > 0
OUT = (
    (_TR & ~_BR).astype(np.uint8)  # east: region above
    | ((_BR & ~_BL) << 1)  # south: region to the east
    | ((_BL & ~_TL) << 2)  # west: region below
    | ((_TL & ~_TR) << 3)  # north: region to the west
).astype(np.uint8)
SADDLE = np.isin(_CODES, (6, 9))


def _pixel_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of region pixels along rows, as flat start and end (inclusive) pixel indices, and
    the region label of each run (4-connected: runs of adjacent rows that overlap are one)."""
    h, w = mask.shape
    edge = np.zeros((h, w + 1), dtype=bool)
    edge[:, 1:-1] = mask[:, 1:] != mask[:, :-1]
    edge[:, 0], edge[:, -1] = mask[:, 0], mask[:, -1]
    flips = np.flatnonzero(edge)  # row-major: each run's start, then its end + 1
    row, col = np.divmod(flips, w + 1)
    start = row[0::2] * w + col[0::2]
    end = row[1::2] * w + col[1::2] - 1
    n = len(start)
    # Runs of row y that a run of row y + 1 touches: a range of the runs sorted by position.
    lo = np.searchsorted(end, start - w)  # first run ending at or after this one's start, above
    hi = np.searchsorted(start, end - w, side="right")  # past the last starting by its end
    count = np.maximum(hi - lo, 0)
    below = np.repeat(np.arange(n), count)
    above = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
    graph = coo_matrix((np.ones(len(below), dtype=np.int8), (below, above)), shape=(n, n))
    return np.column_stack([start, end]), connected_components(graph, directed=False)[1]


def _label_at(runs: np.ndarray, labels: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """The region label of region pixels (flat indices)."""
    return labels[np.searchsorted(runs[:, 0], flat, side="right") - 1]


def polygonize(mask: np.ndarray, row0: int = 0, cuts: bool = False) -> np.ndarray:
    """The 4-connected regions of ``mask`` as shapely polygons (holes included) in pixel
    coordinates, rows counted from ``row0``; see the module's docstring for ``cuts``."""
    h, w = mask.shape
    if not mask.any():
        return np.empty(0, dtype=object)
    cy, cx, kind = _corners(mask, cuts)
    runs, labels = _pixel_runs(mask)
    # A corner's place in column order, for the south and north neighbours.
    by_col = np.lexsort((cy, cx))
    col_pos = np.empty_like(by_col)
    col_pos[by_col] = np.arange(len(by_col))
    # Saddles: are their two region pixels one region?
    saddle = SADDLE[kind]
    same = np.zeros(len(cy), dtype=bool)
    if saddle.any():
        s = np.flatnonzero(saddle)
        tl = kind[s] == 9  # TL and BR are the region pixels, else TR and BL
        ya, xa = cy[s] - 1, np.where(tl, cx[s] - 1, cx[s])
        yb, xb = cy[s], np.where(tl, cx[s], cx[s] - 1)
        same[s] = _label_at(runs, labels, ya * w + xa) == _label_at(runs, labels, yb * w + xb)
    corner, d, succ = _segments(kind, saddle, same, by_col, col_pos)
    walk, ring = ring_order(succ)
    vx = cx[corner[walk]].astype(np.float64)
    vy = (cy[corner[walk]] + row0).astype(np.float64)
    first = np.flatnonzero(np.r_[True, ring[1:] != ring[:-1]])
    after = np.arange(1, len(walk) + 1)
    after[np.r_[first[1:] - 1, len(walk) - 1]] = first
    area = np.bincount(ring, weights=vx * vy[after] - vx[after] * vy)
    # The region of each ring: that of the pixel on the left of its first segment.
    f = walk[first]
    fx, fy, fd = cx[corner[f]], cy[corner[f]], d[f]
    py = np.choose(fd, [fy - 1, fy, fy, fy - 1])
    px = np.choose(fd, [fx, fx, fx - 1, fx - 1])
    owner = _label_at(runs, labels, py * w + px)
    by_region = np.lexsort((area > 0, owner))  # by region, its shell first
    rank = np.empty_like(by_region)
    rank[by_region] = np.arange(len(by_region))
    vert = np.argsort(rank[ring], kind="stable")
    rings = shapely.linearrings(np.column_stack([vx[vert], vy[vert]]), indices=rank[ring][vert])
    poly = np.unique(owner[by_region], return_inverse=True)[1]
    return shapely.polygons(rings, indices=poly)


def _corners(mask: np.ndarray, cuts: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid corners where a boundary turns, in row order: row, column and kind (a 4-bit
    code of which of the four pixels around the corner are in ``mask``)."""
    h, w = mask.shape
    pad = np.zeros((h + 2, w + 2), dtype=bool)
    pad[1:-1, 1:-1] = mask
    tl, tr, bl, br = pad[:-1, :-1], pad[:-1, 1:], pad[1:, :-1], pad[1:, 1:]
    # A corner has an odd number of region pixels around it; a saddle two, diagonal.
    upper, lower = tl ^ tr, bl ^ br
    vertex = upper ^ lower
    vertex |= upper & lower & (tl ^ bl)
    del upper, lower
    if cuts:  # the boundary passing straight along the first and last grid lines
        vertex[0] |= tl[0] ^ bl[0]
        vertex[-1] |= tl[-1] ^ bl[-1]
    flat = np.flatnonzero(vertex)
    del vertex
    cy, cx = np.divmod(flat, w + 1)
    kind = (
        pad[cy, cx].astype(np.uint8)
        | (pad[cy, cx + 1] << 1)
        | (pad[cy + 1, cx] << 2)
        | (pad[cy + 1, cx + 1] << 3)
    )
    return cy, cx, kind


def _segments(
    kind: np.ndarray,
    saddle: np.ndarray,
    same: np.ndarray,
    by_col: np.ndarray,
    col_pos: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boundary's segments, one per corner and direction leaving it (two at a saddle),
    ordered by (corner, direction): each one's corner, direction, and the index of the segment
    that follows it on its ring (turning at a saddle as ``same`` says its pixels connect)."""
    out = OUT[kind]
    seg_corner, seg_dir = [], []
    for d in range(4):
        has = np.flatnonzero(out >> d & 1)
        seg_corner.append(has)
        seg_dir.append(np.full(len(has), d))
    corner, d = np.concatenate(seg_corner), np.concatenate(seg_dir)
    order = np.argsort(corner * 4 + d, kind="stable")
    corner, d = corner[order], d[order]
    key = corner * 4 + d
    # The corner each segment reaches, and the direction it leaves that corner in.
    n_c = len(kind)
    nxt_row = np.minimum(corner + 1, n_c - 1)
    prv_row = np.maximum(corner - 1, 0)
    nxt_col = by_col[np.minimum(col_pos[corner] + 1, n_c - 1)]
    prv_col = by_col[np.maximum(col_pos[corner] - 1, 0)]
    target = np.choose(d, [nxt_row, nxt_col, prv_row, prv_col])
    t_out = out[target]
    turn = np.where(same[target], (d + 1) % 4, (d + 3) % 4)
    single = np.log2(np.maximum(t_out, 1)).astype(np.int64)  # the one bit of a non-saddle
    nd = np.where(saddle[target], turn, single)
    return corner, d, np.searchsorted(key, target * 4 + nd)


def ring_order(succ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cycles of the permutation ``succ`` (each element's successor): the elements in cycle
    order, each cycle from its lowest element, cycles by their lowest element; and the cycle
    number of each element in that order. Pointer doubling (``log2`` of the longest cycle
    rounds of array gathers): a graph walk from a root linked to every element costs more in
    scipy (its root's adjacency is rescanned)."""
    n = len(succ)
    # The lowest element of each cycle: minima over windows of doubling length, until a window
    # twice as long changes nothing (then every window spans its whole cycle).
    low, jump = np.arange(n), succ
    while True:
        ahead = low[jump]
        if (ahead == low).all():
            break
        low = np.minimum(low, ahead)
        jump = jump[jump]
    # Steps from the cycle's lowest element: doubling along predecessors, cut at that element.
    pred = np.empty(n, dtype=np.int64)
    pred[succ] = np.arange(n)
    start = low == np.arange(n)
    pred[start] = np.flatnonzero(start)
    steps = (~start).astype(np.int64)
    while True:
        up = pred[pred]
        if (up == pred).all():
            break
        steps += steps[pred]
        pred = up
    order = np.lexsort((steps, low))
    ring = np.cumsum(start[order]) - 1
    return order, ring
