"""A skeleton (one-pixel-wide strokes) as a graph: the pixel paths between its nodes.

Our own short module rather than ``skan``: skan pulls in numba and pandas, and what is needed here
is small and vectorised (scipy's sparse graph routines walk the paths in C).

Pixels link to their 8 neighbours, except that a diagonal link is dropped where the two pixels
share a 4-neighbour in the skeleton: the staircase corners of a thin line then have 2 links, not
3, so only true junctions and ends become nodes. Nodes: pixels with 1 link (ends) or 3 or more
(junctions; adjacent junction pixels form one junction, placed at their centroid, where every
line through it ends: lines meet at shared end points).

The graph is traced for the core rows of a strip, from the skeleton of a window that reaches
further (degrees and junctions there are the whole map's). A link across the core's border
between two path pixels ends at a *cut* node at its midpoint, where the neighbouring strip's
piece of the same line starts; a path that reaches a node across the border ends at that node
(the other strip leaves that link alone), and a link between two nodes across the border is
traced by the upper strip only. So every edge of the whole map's graph is traced exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, depth_first_order

Distance = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Distance (metres) to the stroke's edge at window pixels (rows, columns)."""


@dataclass
class Piece:
    """A pixel path between two nodes (or a closed ring of pixels with no node).

    ``coords``: (n, 2) pixel-centre coordinates (x = column + 0.5, y = row + 0.5 of the map); the
    first and last are the end nodes' points. ``start_cut``/``end_cut``: that end is a cut node.
    ``samples``: distance-to-edge (metres) at the path's pixels, for the stroke width.
    ``ring``: a loop of path pixels with no node (first point repeated last).
    ``ready``: per end, the map row the strips must have covered before that node has all its
    edges (a junction on a cut gets edges from both strips). ``radius``: per end, a junction's
    distance to the strokes' edge (metres; 0 elsewhere): a branch's length beyond the stroke it
    leaves is its length less that.
    """

    coords: np.ndarray
    start_cut: bool
    end_cut: bool
    samples: np.ndarray
    ring: bool = False
    ready: tuple[int, int] = (0, 0)
    radius: tuple[float, float] = (0.0, 0.0)


@dataclass
class _Pixels:
    """A window's skeleton as lists: its pixels (sorted flat indices, rows, columns), their
    links (pixel index pairs per direction) and their degrees. Memory and work in proportion to
    the skeleton, not the window (centre lines are a few percent of a map)."""

    flat: np.ndarray
    y: np.ndarray
    x: np.ndarray
    width: int
    links: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]
    deg: np.ndarray


def pixels(sk: np.ndarray) -> _Pixels:
    """Pruned links: pixel (y, x) links to its 4-neighbours right and below, and to a diagonal
    neighbour below unless the two share a 4-neighbour in the skeleton; each link once, from
    its first pixel in row-major order."""
    h, w = sk.shape
    flat = np.flatnonzero(sk)
    y, x = np.divmod(flat, w)

    def near(dy: int, dx: int) -> np.ndarray:
        inside = (x + dx >= 0) & (x + dx < w) & (y + dy >= 0) & (y + dy < h)
        return np.where(inside, _find(flat, flat + dy * w + dx), -1)

    right, below, left = near(0, 1), near(1, 0), near(0, -1)
    down_right, down_left = near(1, 1), near(1, -1)
    keep = {
        (0, 1): right >= 0,
        (1, 0): below >= 0,
        (1, 1): (down_right >= 0) & (below < 0) & (right < 0),
        (1, -1): (down_left >= 0) & (below < 0) & (left < 0),
    }
    other = {(0, 1): right, (1, 0): below, (1, 1): down_right, (1, -1): down_left}
    links = {}
    deg = np.zeros(len(flat), dtype=np.int64)
    for k, sel in keep.items():
        i = np.flatnonzero(sel)
        j = other[k][i]
        links[k] = (i, j)
        deg += np.bincount(i, minlength=len(flat)) + np.bincount(j, minlength=len(flat))
    return _Pixels(flat, y, x, w, links, deg)


@dataclass
class _Vertices:
    """One strip's graph: core pixels, then outside nodes next to the core, then cut nodes."""

    xy: np.ndarray  # (n, 2) map pixel-centre coordinates (a cut node: its link's midpoint)
    point: np.ndarray  # where a line ending at the vertex ends (a junction: its centroid)
    ready: np.ndarray  # a node is settled once the strips have covered this map row
    radius: np.ndarray  # a junction's distance to the edge (metres), else 0
    jlabel: np.ndarray  # junction of a junction pixel (-1: none)
    chain: np.ndarray  # path pixel (2 links)
    cut: np.ndarray  # a cut node
    samples: np.ndarray  # distance to the edge (metres) at core pixels, else NaN
    u: np.ndarray  # links, as vertex pairs
    v: np.ndarray


def _find(table: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Positions of ``flat`` pixel indices in the sorted ``table`` (-1: absent). Lookups in the
    pixel lists keep memory to the skeleton's size, not the window's."""
    at = np.minimum(np.searchsorted(table, flat), max(len(table) - 1, 0))
    found = table[at] == flat if len(table) else np.zeros(len(flat), dtype=bool)
    return np.where(found, at, -1)


def _junctions(
    px: _Pixels, dist: Distance, w0: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Junctions of a window (map rows from ``w0``): the junction pixels (sorted flat indices)
    and their junction's label, and per junction its centroid (x, y), its last map row and its
    largest distance to the edge.
    Computed on the whole window, so a junction that a cut crosses is the same junction to both
    strips."""
    junc = px.deg >= 3
    at = np.cumsum(junc) - 1  # a junction pixel's index among the junction pixels
    us, vs = [], []
    for i, j in px.links.values():
        both = junc[i] & junc[j]
        us.append(at[i[both]])
        vs.append(at[j[both]])
    ys, xs = px.y[junc], px.x[junc]
    comp = _components(int(junc.sum()), np.concatenate(us), np.concatenate(vs))
    count = np.maximum(np.bincount(comp, minlength=1), 1)
    centre = np.column_stack(
        [
            np.bincount(comp, weights=xs + 0.5, minlength=1) / count,
            np.bincount(comp, weights=ys + w0 + 0.5, minlength=1) / count,
        ]
    )
    last = np.zeros(len(count), dtype=np.int64)
    np.maximum.at(last, comp, ys + w0)
    radius = np.zeros(len(count))
    np.maximum.at(radius, comp, dist(ys, xs))
    return px.flat[junc], comp, centre, last, radius


def _crossing(
    y1: np.ndarray,
    x1: np.ndarray,
    y2: np.ndarray,
    x2: np.ndarray,
    core: tuple[int, int],
    deg: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Split links that cross the core's border by what the two strips do with them: both
    ends on a path -> a cut node at the midpoint (``cut``); the inner end on a path -> the line
    ends at the outer node (``inner_path``); both ends nodes -> a two-point line, traced by the
    upper strip only (``nodes``); the inner end a node, the outer on a path -> left to the other
    strip, which traces that path to this node."""
    in1 = (y1 >= core[0]) & (y1 < core[1])
    in2 = (y2 >= core[0]) & (y2 < core[1])
    crossing = in1 ^ in2
    iy = np.where(in1, y1, y2)
    ix = np.where(in1, x1, x2)
    oy = np.where(in1, y2, y1)
    ox = np.where(in1, x2, x1)
    ipath = np.where(in1, deg[0], deg[1]) == 2
    opath = np.where(in1, deg[1], deg[0]) == 2
    cut = crossing & ipath & opath
    inner_path = crossing & ipath & ~opath
    nodes = crossing & ~ipath & ~opath & (iy < oy)
    return (in1 & in2), cut, inner_path | nodes, (iy, ix, oy, ox)


def _vertices(sk: np.ndarray, dist: Distance, w0: int, row0: int, row1: int) -> _Vertices:
    """Vertices and links of the core rows [row0, row1) of a window (map rows from ``w0``)."""
    px = pixels(sk)
    jflat, jcomp, centre, last, jradius = _junctions(px, dist, w0)
    c0, c1, w = row0 - w0, row1 - w0, px.width
    in_core = (px.y >= c0) & (px.y < c1)
    core = px.flat[in_core]
    ys, xs = px.y[in_core], px.x[in_core]

    def idx(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return _find(core, y * w + x)

    inner, cut_u, cut_xy, out_u, out_flat = [], [], [], [], []
    for i, j in px.links.values():
        sel = (px.y[i] >= c0 - 1) & (px.y[i] < c1)
        i, j = i[sel], j[sel]
        y1, x1, y2, x2 = px.y[i], px.x[i], px.y[j], px.x[j]
        both, cut, outer, (iy, ix, oy, ox) = _crossing(
            y1, x1, y2, x2, (c0, c1), (px.deg[i], px.deg[j])
        )
        inner.append(np.column_stack([idx(y1[both], x1[both]), idx(y2[both], x2[both])]))
        cut_u.append(idx(iy[cut], ix[cut]))
        mid = [(x1[cut] + x2[cut]) / 2 + 0.5, (y1[cut] + y2[cut]) / 2 + w0 + 0.5]
        cut_xy.append(np.column_stack(mid))
        out_u.append(idx(iy[outer], ix[outer]))
        out_flat.append(oy[outer] * w + ox[outer])
    n, cut_xy = len(ys), np.concatenate(cut_xy)
    flats, out_v = np.unique(np.concatenate(out_flat), return_inverse=True)
    oy, ox = np.divmod(flats, w)
    vy, vx = np.concatenate([ys, oy]), np.concatenate([xs, ox])
    pixel_xy = np.column_stack([vx + 0.5, vy + w0 + 0.5])
    at = _find(jflat, vy * w + vx)
    vlab = np.where(at >= 0, jcomp[np.maximum(at, 0)] if len(jcomp) else -1, -1)
    point = pixel_xy.copy()
    point[vlab >= 0] = centre[vlab[vlab >= 0]]
    ready = np.where(vlab >= 0, last[np.maximum(vlab, 0)], vy + w0) + 2
    radius = np.where(vlab >= 0, jradius[np.maximum(vlab, 0)], 0.0)
    n_pix, n_cut = len(vy), len(cut_xy)
    links_ = np.concatenate(
        [
            np.concatenate(inner),
            np.column_stack([np.concatenate(cut_u), n_pix + np.arange(n_cut)]),
            np.column_stack([np.concatenate(out_u), n + out_v]),
        ]
    )
    no = np.zeros(n_cut, dtype=bool)
    samples = np.full(n_pix + n_cut, np.nan)
    samples[:n] = dist(ys, xs)
    return _Vertices(
        xy=np.concatenate([pixel_xy, cut_xy]),
        point=np.concatenate([point, cut_xy]),
        ready=np.concatenate([ready, np.zeros(n_cut, dtype=np.int64)]),
        radius=np.concatenate([radius, np.zeros(n_cut)]),
        jlabel=np.concatenate([vlab, np.full(n_cut, -1)]),
        chain=np.concatenate([px.deg[_find(px.flat, vy * w + vx)] == 2, no]),
        cut=np.concatenate([np.zeros(n_pix, dtype=bool), ~no]),
        samples=samples,
        u=links_[:, 0],
        v=links_[:, 1],
    )


def _components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` vertices linked by (u, v)."""
    graph = coo_matrix((np.ones(len(u), dtype=np.int8), (u, v)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _path_orders(g: _Vertices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of path pixels, each in order along its line, all in one array; where each run
    starts in it; and whether each run is a ring (a run with no node: a closed loop of
    pixels)."""
    n = len(g.xy)
    cc = g.chain[g.u] & g.chain[g.v]
    cu, cv = g.u[cc], g.v[cc]
    label = _components(n, cu, cv)
    cdeg = np.bincount(cu, minlength=n) + np.bincount(cv, minlength=n)
    verts = np.flatnonzero(g.chain)
    if not len(verts):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=bool)
    lab = label[verts]
    # The first vertex of each run: its lowest-numbered end, or for a ring its lowest vertex;
    # an open run's last vertex is its other end (the next in this order).
    order = np.lexsort((verts, cdeg[verts] >= 2, lab))
    sv, sl = verts[order], lab[order]
    at = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1]])
    starts = sv[at]
    rings = cdeg[starts] >= 2
    nxt = np.minimum(at + 1, len(sv) - 1)
    two_ends = (at + 1 < len(sv)) & (sl[nxt] == sl[at]) & (cdeg[sv[nxt]] < 2)
    ends = np.where(two_ends, sv[nxt], starts)
    # Open each ring at its start: drop the link to the start's lower-numbered neighbour, which
    # is then the ring's last vertex.
    drop = np.zeros(len(cu), dtype=bool)
    if rings.any():
        is_ring_start = np.zeros(n, dtype=bool)
        is_ring_start[starts[rings]] = True
        a_side, b_side = np.flatnonzero(is_ring_start[cu]), np.flatnonzero(is_ring_start[cv])
        s_of = np.concatenate([cu[a_side], cv[b_side]])
        nb = np.concatenate([cv[a_side], cu[b_side]])
        link = np.concatenate([a_side, b_side])
        pick = np.lexsort((nb, s_of))
        lowest = pick[np.r_[True, s_of[pick][1:] != s_of[pick][:-1]]]
        drop[link[lowest]] = True
        ring_end = dict(zip(s_of[lowest].tolist(), nb[lowest].tolist(), strict=True))
        ends[rings] = [ring_end[s] for s in starts[rings].tolist()]
    # One long path through every run, each run's last vertex linked to the next run's first:
    # a walk from the first start visits them all in order (a root linked to every start would
    # cost scipy a rescan of its links on each return).
    gu = np.concatenate([cu[~drop], ends[:-1]])
    gv = np.concatenate([cv[~drop], starts[1:]])
    graph = coo_matrix((np.ones(len(gu), dtype=np.int8), (gu, gv)), shape=(n, n)).tocsr()
    walk = depth_first_order(graph, int(starts[0]), directed=False, return_predecessors=False)
    is_start = np.zeros(n, dtype=bool)
    is_start[starts] = True
    first = np.flatnonzero(is_start[walk])
    is_ring = np.zeros(n, dtype=bool)
    is_ring[starts[rings]] = True
    return walk, first, is_ring[walk[first]]


def _node_neighbours(g: _Vertices) -> np.ndarray:
    """For each path pixel, its (up to two) neighbours that are not path pixels (-1: none)."""
    nb = np.full((len(g.xy), 2), -1, dtype=np.int64)
    one = g.chain[g.u] ^ g.chain[g.v]
    c = np.where(g.chain[g.u[one]], g.u[one], g.v[one])
    o = np.where(g.chain[g.u[one]], g.v[one], g.u[one])
    order = np.argsort(c, kind="stable")
    c, o = c[order], o[order]
    second = np.zeros(len(c), dtype=bool)
    second[1:] = c[1:] == c[:-1]
    nb[c[~second], 0] = o[~second]
    nb[c[second], 1] = o[second]
    return nb


@dataclass
class Pieces:
    """A strip's pieces, all in arrays: piece ``k``'s points are ``coords[offsets[k] :
    offsets[k + 1]]`` and its distance samples ``samples[sample_offsets[k] :
    sample_offsets[k + 1]]``; the other fields as :class:`Piece`'s, one row per piece."""

    coords: np.ndarray
    offsets: np.ndarray
    start_cut: np.ndarray
    end_cut: np.ndarray
    ring: np.ndarray
    ready: np.ndarray  # (n, 2)
    radius: np.ndarray  # (n, 2)
    samples: np.ndarray
    sample_offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.start_cut)

    def piece(self, k: int) -> Piece:
        """Piece ``k`` as a :class:`Piece`."""
        o, so = self.offsets, self.sample_offsets
        return Piece(
            self.coords[o[k] : o[k + 1]],
            bool(self.start_cut[k]),
            bool(self.end_cut[k]),
            self.samples[so[k] : so[k + 1]],
            bool(self.ring[k]),
            (int(self.ready[k, 0]), int(self.ready[k, 1])),
            (float(self.radius[k, 0]), float(self.radius[k, 1])),
        )


def _runs_as_pieces(
    g: _Vertices, nb: np.ndarray, walk: np.ndarray, first: np.ndarray, ring: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each run's vertices with its end nodes (a ring: its first vertex again), all in one
    array, and where each piece starts in it; each run's samples (its pixels'), and where
    each piece's start."""
    n_runs = len(first)
    length = np.diff(np.r_[first, len(walk)])
    pre = (~ring).astype(np.int64)
    out_len = length + pre + 1
    start = np.cumsum(out_len) - out_len
    verts = np.empty(int(out_len.sum()), dtype=np.int64)
    run_of = np.repeat(np.arange(n_runs), length)
    verts[np.repeat(start + pre - first, length) + np.arange(len(walk))] = walk
    head = walk[first]
    tail = walk[first + length - 1]
    openr = ~ring
    verts[start[openr]] = nb[head[openr], 0]
    suffix = np.where(ring, head, np.where(length == 1, nb[head, 1], nb[tail, 0]))
    verts[start + pre + length] = suffix
    s = g.samples[walk]
    keep = ~np.isnan(s)
    counts = np.bincount(run_of[keep], minlength=n_runs)
    return verts, start, s[keep], counts


def _links_as_pieces(g: _Vertices) -> tuple[np.ndarray, np.ndarray]:
    """Links between two nodes (an end next to a junction, two junctions), except inside one
    junction, as two-point pieces: their (a, b) vertices, and their samples: those of their
    ends that are not junction pixels, else of both ends (NaN dropped), as (value, piece)."""
    nn = ~g.chain[g.u] & ~g.chain[g.v]
    a, b = g.u[nn], g.v[nn]
    inside = (g.jlabel[a] >= 0) & (g.jlabel[a] == g.jlabel[b])
    a, b = a[~inside], b[~inside]
    sa, sb = g.samples[a], g.samples[b]
    own_a = (g.jlabel[a] < 0) & ~np.isnan(sa)
    own_b = (g.jlabel[b] < 0) & ~np.isnan(sb)
    none = ~own_a & ~own_b
    take_a = own_a | (none & ~np.isnan(sa))
    take_b = own_b | (none & ~np.isnan(sb))
    values = np.column_stack([sa, sb])[np.column_stack([take_a, take_b])]
    piece = np.repeat(np.arange(len(a)), take_a.astype(np.int64) + take_b)
    return np.column_stack([a, b]), np.column_stack([values, piece]) if len(a) else np.zeros((0, 2))


def trace(sk: np.ndarray, dist: Distance, w0: int, row0: int, row1: int) -> Pieces:
    """The pieces of the skeleton's core rows [row0, row1), from the skeleton ``sk`` of a
    window starting at map row ``w0`` and the distance to the stroke's edge there (``dist``).
    The window must reach past the core by the widest junction (the halo does)."""
    g = _vertices(sk, dist, w0, row0, row1)
    nb = _node_neighbours(g)
    walk, first, ring = _path_orders(g)
    verts, start, run_samples, run_counts = _runs_as_pieces(g, nb, walk, first, ring)
    pairs, link_samples = _links_as_pieces(g)
    n_links = len(pairs)
    verts = np.concatenate([verts, pairs.ravel()])
    offsets = np.concatenate([start, len(verts) - 2 * n_links + 2 * np.arange(n_links + 1)])
    coords = g.xy[verts]
    head, tail = verts[offsets[:-1]], verts[offsets[1:] - 1]
    coords[offsets[:-1]] = g.point[head]
    coords[offsets[1:] - 1] = g.point[tail]
    link_counts = np.bincount(link_samples[:, 1].astype(np.int64), minlength=n_links)
    counts = np.concatenate([run_counts, link_counts])
    return Pieces(
        coords=coords,
        offsets=offsets,
        start_cut=g.cut[head],
        end_cut=g.cut[tail],
        ring=np.concatenate([ring, np.zeros(n_links, dtype=bool)]),
        ready=np.column_stack([g.ready[head], g.ready[tail]]).astype(np.int64),
        radius=np.column_stack([g.radius[head], g.radius[tail]]).astype(np.float64),
        samples=np.concatenate([run_samples, link_samples[:, 0]]),
        sample_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    )
