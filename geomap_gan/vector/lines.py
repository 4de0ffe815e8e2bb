"""Line classes (road, highway) as centre lines, assembled strip by strip exactly as if the map
were traced whole.

Each strip's class mask is skeletonized (``skimage.morphology.skeletonize``) with a band of rows
above and below, so the core rows' skeleton is the whole map's (thinning only looks a few
pixels around, less than the band for strokes narrower than twice it). The core's skeleton is
traced into pieces (:mod:`geomap_gan.vector.graph`); pieces that end at the cut between two
strips join the next strip's pieces there, into the same raw edges (node to node) the whole map
gives. Each complete edge is simplified and measured; once all edges at its nodes are traced,
spurs (an edge with a free end, shorter than ``min_length``) are pruned; edges are then merged
through the nodes left with two edges, and a line is written once all its nodes are settled.

Widths: twice the distance from the centre line to the stroke's edge, median along the line.
The distance is the Euclidean distance transform's (metres to the nearest pixel outside the
stroke) at the centre-line pixels, found by looking outwards from those pixels only (exact, and
far cheaper than a transform of the whole strip: centre lines are a few percent of a map). The
edge lies half a pixel before that pixel, but a stroke of even width has no centre pixel and its
skeleton runs half a pixel off-centre, so twice the distance less one pixel is exact for odd
widths and a pixel short for even ones: width = 2 x distance - 1/2 pixel is right on average
(within half a pixel either way), and gave the best round-trip IoU on the val maps.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from skimage.morphology import skeletonize

from geomap_gan.vector.features import Batch, to_world
from geomap_gan.vector.graph import Distance, Piece, Pieces

HALO = 64
"""Rows of context above and below a strip for the skeleton and the distances: both match the
whole map's for strokes up to about this wide (map roads are 4-20 px)."""

REACH = HALO // 2
"""Distances to a stroke's edge are looked for up to this many pixels (wider blobs: capped)."""

Key = tuple[float, float]


def _offsets(pixel_m: tuple[float, float], reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets within ``reach`` by increasing ground distance, and those distances."""
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    d = np.hypot(dy * pixel_m[1], dx * pixel_m[0]).ravel()
    order = np.argsort(d, kind="stable")[1:]  # [0] is the pixel itself
    return np.column_stack([dy.ravel()[order], dx.ravel()[order]]), d[order]


def edge_distance(
    mask: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    pixel_m: tuple[float, float],
    reach: int = REACH,
) -> np.ndarray:
    """Ground distance (metres) from pixels (ys, xs) of ``mask`` to the nearest pixel outside it
    (pixels beyond the array do not count, as in ``distance_transform_edt``): offsets are tried
    nearest first, and each pixel stops at its first hit."""
    offsets, dist = _offsets(pixel_m, reach)
    out = np.full(len(ys), dist[-1])
    todo = np.arange(len(ys))
    h, w = mask.shape
    for (dy, dx), d in zip(offsets.tolist(), dist.tolist(), strict=True):
        if not len(todo):
            break
        y, x = ys[todo] + dy, xs[todo] + dx
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        hit = inside & ~mask[np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)]
        out[todo[hit]] = d
        todo = todo[~hit]
    return out


def skeleton(mask: np.ndarray, pixel_m: tuple[float, float]) -> tuple[np.ndarray, Distance]:
    """The mask's skeleton, and the distance to its strokes' edges at given pixels."""

    def dist(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return edge_distance(mask, ys, xs, pixel_m)

    return skeletonize(mask), dist


def canonical(coords: np.ndarray, ring: bool) -> np.ndarray:
    """One orientation per line, whatever order it was traced in: an open line runs from its
    lower end (x, then y); a ring starts at its lowest vertex, towards its lower neighbour."""
    if ring:
        body = coords[:-1]
        k = int(np.lexsort((body[:, 1], body[:, 0]))[0])
        body = np.roll(body, -k, axis=0)
        if tuple(body[-1]) < tuple(body[1]):
            body = np.concatenate([body[:1], body[1:][::-1]])
        return np.concatenate([body, body[:1]])
    rev = coords[::-1]
    return (
        rev.copy()
        if (tuple(rev[0]), tuple(rev[1])) < (tuple(coords[0]), tuple(coords[1]))
        else coords
    )


@dataclass
class Edge:
    """A complete edge between two nodes, simplified: pixel coordinates, length in metres and
    the distance-to-edge samples along it (metres)."""

    coords: np.ndarray
    a: Key
    b: Key
    length: float
    samples: np.ndarray


def medians(groups: list[np.ndarray]) -> np.ndarray:
    """The median of each array (NaN for an empty one), all at once."""
    sizes = np.array([len(g) for g in groups])
    if not len(groups) or not sizes.sum():
        return np.full(len(groups), np.nan)
    values = np.concatenate(groups)
    label = np.repeat(np.arange(len(groups)), sizes)
    values = values[np.lexsort((values, label))]
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    lo = start + np.maximum(sizes - 1, 0) // 2
    hi = start + sizes // 2
    out = (values[np.minimum(lo, len(values) - 1)] + values[np.minimum(hi, len(values) - 1)]) / 2
    return np.where(sizes > 0, out, np.nan)


def _reversed(p: Piece) -> Piece:
    """``p`` traced the other way."""
    return Piece(
        p.coords[::-1], p.end_cut, p.start_cut, p.samples, p.ring, p.ready[::-1], p.radius[::-1]
    )


def join(a: Piece, b: Piece, at: Key) -> Piece:
    """Two pieces that end at the same cut node, as one (the cut point dropped: the link it
    split joins the pieces' last pixels, as in the whole map)."""
    if a.start_cut and tuple(a.coords[0]) == at:
        a = _reversed(a)
    if not (b.start_cut and tuple(b.coords[0]) == at):
        b = _reversed(b)
    coords = np.concatenate([a.coords[:-1], b.coords[1:]])
    samples = np.concatenate([a.samples, b.samples])
    ready, radius = (a.ready[0], b.ready[1]), (a.radius[0], b.radius[1])
    return Piece(coords, a.start_cut, b.end_cut, samples, False, ready, radius)


def close(p: Piece) -> Piece:
    """A piece whose two ends are the same cut node, as the ring it is."""
    body = p.coords[1:-1]
    return Piece(np.concatenate([body, body[:1]]), False, False, p.samples, ring=True)


def join_at_row(pieces: list[Piece], row: float) -> list[Piece]:
    """Join pieces at their cut nodes on ``row`` (two pieces meet at each: one from each strip;
    a piece that comes back to a cut node it started from is a ring)."""
    alive = dict(enumerate(pieces))
    at: dict[Key, list[int]] = defaultdict(list)
    for i, p in alive.items():
        for k in _cut_keys(p):
            if k[1] == row:
                at[k].append(i)
    new = len(pieces)
    for k in sorted(at):
        ids = at[k]
        if len(ids) != 2 or not all(i in alive for i in ids):
            continue  # unmatched (the strips' skeletons disagree): a free end
        i, j = ids
        if i == j:
            alive[i] = close(alive[i])
            continue
        alive[new] = join(alive.pop(i), alive.pop(j), k)
        for k2 in _cut_keys(alive[new]):
            if k2 in at:
                at[k2] = [new if x in (i, j) else x for x in at[k2]]
        new += 1
    return list(alive.values())


def _cut_keys(p: Piece) -> list[Key]:
    """The cut nodes ``p`` ends at."""
    return [tuple(p.coords[i]) for i, c in ((0, p.start_cut), (-1, p.end_cut)) if c]


DEGREE, PENDING, REMOVED, READY, RADIUS = range(5)
"""A node's record: edges at it, those not yet pruned or kept, those pruned as spurs, the map row
the strips must reach before all its edges are traced, a junction's distance to the edge."""


def _open_reversed(coords: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Which open lines :func:`canonical` turns round (their last end before their first, by
    x then y, then the points next to them), all at once."""
    f0, f1 = coords[offsets[:-1]], coords[offsets[:-1] + 1]
    l0, l1 = coords[offsets[1:] - 1], coords[offsets[1:] - 2]
    earlier = np.zeros(len(f0), dtype=bool)
    tie = np.ones(len(f0), dtype=bool)
    for a, b in ((l0[:, 0], f0[:, 0]), (l0[:, 1], f0[:, 1]), (l1[:, 0], f1[:, 0]),
                 (l1[:, 1], f1[:, 1])):  # fmt: skip
        earlier |= tie & (a < b)
        tie &= a == b
    return earlier


class LineAssembler:
    """Centre lines of one line class, fed strip by strip, emitted as final batches.

    ``tolerance``: simplification in pixels; ``min_length`` in metres. ``transform`` places
    pixel coordinates in the CRS, ``scale`` turns CRS units into metres (x, y).

    Pieces with no end on a cut (most of them) are taken in bulk, as arrays; those that end on
    a cut are joined one by one (a few per strip: the lines crossing its borders). Nodes are
    records in a dict by their point, dropped once settled.
    """

    def __init__(
        self,
        name: str,
        height: int,
        transform: Affine,
        scale: tuple[float, float],
        pixel_m: tuple[float, float],
        min_length: float,
        tolerance: float,
    ) -> None:
        self.name = name
        self.height = height
        self.transform = transform
        t, (sx, sy) = transform, scale
        # Pixel coordinates -> ground metres (the linear part of transform, then scale).
        self.metric = Affine(t.a * sx, t.b * sx, 0, t.d * sy, t.e * sy, 0)
        self.pixel_m = pixel_m
        self.min_length = min_length
        self.tolerance = tolerance
        self.open: dict[Key, Piece] = {}  # pieces waiting at the bottom cut, by cut node
        self.nodes: dict[Key, list[Any]] = {}  # DEGREE, PENDING, REMOVED, READY, RADIUS
        self.done_row: float = 0
        self.complete: list[Edge] = []  # complete edges not yet pruned or kept
        self.kept: dict[int, Edge] = {}
        self.at: dict[Key, list[int]] = defaultdict(list)  # kept edges at a node
        self.next_id = 0
        self.out: list[tuple[np.ndarray, float, np.ndarray]] = []

    def add(self, pieces: Pieces, row0: int, row1: int) -> list[Batch]:
        """Take the pieces of core rows [row0, row1); return the lines now final."""
        o = pieces.offsets
        for i, cut, at in ((0, pieces.start_cut, o[:-1]), (1, pieces.end_cut, o[1:] - 1)):
            reg = ~cut & ~pieces.ring
            ends = pieces.coords[at[reg]].tolist()
            for (x, y), ready, radius in zip(ends, pieces.ready[reg, i].tolist(),
                                             pieces.radius[reg, i].tolist(), strict=True):  # fmt: skip
                self._node((x, y), ready, radius)
        waiting = list({id(p): p for p in self.open.values()}.values())
        self.open = {}
        keep = row1 if row1 < self.height else None
        self.done_row = row1 if row1 < self.height else float("inf")
        on_cut = pieces.start_cut | pieces.end_cut
        done = []
        slow = [pieces.piece(k) for k in np.flatnonzero(on_cut).tolist()]
        for p in join_at_row(waiting + slow, row0):
            p = self._free_cut_ends(p, keep)
            keys = _cut_keys(p)
            for k in keys:
                self.open[k] = p
            if not keys:
                done.append(p)
        self._complete(pieces, ~on_cut, done)
        self._prune()
        self._emit_ready()
        return self._flush()

    def _node(self, key: Key, ready: int = 0, radius: float = 0.0) -> None:
        """One more edge end at node ``key``, all traced once the strips reach row ``ready``."""
        rec = self.nodes.get(key)
        if rec is None:
            self.nodes[key] = [1, 1, 0, ready, radius]
            return
        rec[DEGREE] += 1
        rec[PENDING] += 1
        if ready > rec[READY]:
            rec[READY] = ready
        if radius > rec[RADIUS]:
            rec[RADIUS] = radius

    def _free_cut_ends(self, p: Piece, keep_row: float | None) -> Piece:
        """``p`` with its cut ends that are not on row ``keep_row`` made free ends."""
        ends = []
        for i, c in ((0, p.start_cut), (-1, p.end_cut)):
            if c and p.coords[i][1] != keep_row:
                self._node(tuple(p.coords[i]))
                c = False
            ends.append(c)
        return Piece(p.coords, ends[0], ends[1], p.samples, p.ring, p.ready, p.radius)

    def _complete(self, pieces: Pieces, fast: np.ndarray, done: list[Piece]) -> None:
        """Raw edges (node to node) and rings that are complete: the pieces ``fast`` of this
        strip and the joined pieces ``done``. Put in one orientation, simplified and measured
        all at once; rings (no node to prune at) go out as they are, long enough."""
        o, so = pieces.offsets, pieces.sample_offsets
        idx = np.flatnonzero(fast)
        sizes = (o[1:] - o[:-1])[idx]
        take = np.repeat(o[:-1][idx] - (np.cumsum(sizes) - sizes), sizes)
        coords = [pieces.coords[take + np.arange(int(sizes.sum()))]]
        ring = [pieces.ring[idx]]
        samples = [pieces.samples[a:b] for a, b in zip(so[idx].tolist(), so[idx + 1].tolist(),
                                                        strict=True)]  # fmt: skip
        coords += [p.coords for p in done]
        sizes = np.concatenate([sizes, np.array([len(p.coords) for p in done], dtype=np.int64)])
        ring.append(np.array([p.ring for p in done], dtype=bool))
        samples += [p.samples for p in done]
        if not len(sizes):
            return
        xy, is_ring = np.concatenate(coords), np.concatenate(ring)
        offsets = np.r_[0, np.cumsum(sizes)]
        line_of = np.repeat(np.arange(len(sizes)), sizes)
        order = np.arange(len(xy))
        flip = _open_reversed(xy, offsets) & ~is_ring
        if flip.any():
            mirror = (offsets[:-1] + offsets[1:] - 1)[line_of]  # first + last index of a line
            turned = flip[line_of]
            order[turned] = mirror[turned] - order[turned]
        xy = xy[order]
        for k in np.flatnonzero(is_ring).tolist():  # rings: their own canonical form
            xy[offsets[k] : offsets[k + 1]] = canonical(xy[offsets[k] : offsets[k + 1]], True)
        lines = shapely.linestrings(xy, indices=line_of)
        if self.tolerance > 0:
            lines = shapely.simplify(lines, self.tolerance)
        length = shapely.length(to_world(lines, self.metric)).tolist()
        pts, index = shapely.get_coordinates(lines, return_index=True)
        ends = np.cumsum(np.bincount(index, minlength=len(sizes)))
        starts = ends - np.bincount(index, minlength=len(sizes))
        heads, tails = pts[starts].tolist(), pts[ends - 1].tolist()
        for k, (a, b, r) in enumerate(zip(starts.tolist(), ends.tolist(), is_ring.tolist(),
                                          strict=True)):  # fmt: skip
            if r:
                if length[k] >= self.min_length:
                    self.out.append((pts[a:b], length[k], samples[k]))
            else:
                head, tail = heads[k], tails[k]
                self.complete.append(
                    Edge(pts[a:b], (head[0], head[1]), (tail[0], tail[1]), length[k], samples[k])
                )

    def _prune(self) -> None:
        """Decide every complete edge whose nodes have all their edges traced: a spur (a free
        end, reaching less than ``min_length`` beyond the stroke it leaves: thinning makes one
        from every bump on a stroke's side) is dropped, any other edge kept."""
        waiting = []
        nodes, done_row = self.nodes, self.done_row
        for e in self.complete:
            na, nb = nodes[e.a], nodes[e.b]
            if na[READY] > done_row or nb[READY] > done_row:
                waiting.append(e)
                continue
            na[PENDING] -= 1
            nb[PENDING] -= 1
            free = na[DEGREE] == 1 or nb[DEGREE] == 1
            if free and e.length - max(na[RADIUS], nb[RADIUS]) < self.min_length:
                na[REMOVED] += 1
                nb[REMOVED] += 1
                self._forget(e.a)
                self._forget(e.b)
                continue
            self.kept[self.next_id] = e
            self.at[e.a].append(self.next_id)
            self.at[e.b].append(self.next_id)
            self.next_id += 1
        self.complete = waiting

    def _forget(self, key: Key) -> None:
        """Drop the records of a node that no edge will come to or leave from any more."""
        if not self.at.get(key) and self._settled(key):
            self.at.pop(key, None)
            self.nodes.pop(key, None)

    def _settled(self, key: Key) -> bool:
        """All edges at ``key`` are traced and pruned or kept."""
        rec = self.nodes[key]
        return rec[PENDING] == 0 and rec[READY] <= self.done_row

    def _through(self, key: Key) -> bool:
        """Whether lines pass through ``key`` (two edges left after pruning): merged there."""
        rec = self.nodes[key]
        return rec[DEGREE] - rec[REMOVED] == 2

    def _free(self, key: Key) -> bool:
        """A line's end at ``key`` is free: no other line continues there."""
        rec = self.nodes[key]
        return rec[DEGREE] - rec[REMOVED] <= 1

    def _walk(self, eid: int, node: Key) -> tuple[list[tuple[int, bool]], Key, bool] | None:
        """Follow edges from edge ``eid`` out of ``node`` through two-edge nodes: the edges met
        (id, reversed), the node where it stopped and whether it came back to ``eid`` (a ring);
        None when a node on the way is not settled yet."""
        path: list[tuple[int, bool]] = []
        prev = eid
        while True:
            if not self._settled(node):
                return None
            if not self._through(node):
                return path, node, False
            ids = list(self.at[node])
            ids.remove(prev)
            nxt = ids[0]
            if nxt == eid:
                return path, node, True
            edge = self.kept[nxt]
            rev = edge.a != node
            path.append((nxt, rev))
            node = edge.a if rev else edge.b
            prev = nxt

    def _emit_ready(self) -> None:
        """Merge and emit every line whose nodes are all settled."""
        nodes, done_row = self.nodes, self.done_row
        for eid in list(self.kept):
            edge = self.kept.get(eid)
            if edge is None:
                continue
            ra, rb = nodes[edge.a], nodes[edge.b]
            if ra[PENDING] or rb[PENDING] or ra[READY] > done_row or rb[READY] > done_row:
                continue  # an end not settled: the walks below would stop there
            if ra[DEGREE] - ra[REMOVED] != 2 and rb[DEGREE] - rb[REMOVED] != 2:
                self._emit_one(eid, edge)  # no line continues through either end
                continue
            fwd = self._walk(eid, edge.b)
            if fwd is None:
                continue
            ring = fwd[2]
            back = ([], edge.a, False) if ring else self._walk(eid, edge.a)
            if back is None:
                continue
            parts = [(i, not r) for i, r in reversed(back[0])] + [(eid, False)] + fwd[0]
            self._emit(parts, ring, back[1], fwd[1])

    def _emit_one(self, eid: int, edge: Edge) -> None:
        """:meth:`_emit` of one edge between two nodes that no line passes through."""
        del self.kept[eid]
        stub = self._free(edge.a) and self._free(edge.b) and edge.length < self.min_length
        for k in (edge.a, edge.b):
            self.at[k].remove(eid)
            self._forget(k)
        if not stub:
            self.out.append((edge.coords, edge.length, edge.samples))

    def _emit(self, parts: list[tuple[int, bool]], ring: bool, a: Key, b: Key) -> None:
        """Merge the edges ``parts`` (id, reversed) into one line from node ``a`` to ``b``,
        unless it is a stub (free at both ends and shorter than ``min_length``)."""
        edges = [self.kept.pop(i) for i, _ in parts]
        length = sum(e.length for e in edges)
        stub = not ring and self._free(a) and self._free(b) and length < self.min_length
        for (i, _), e in zip(parts, edges, strict=True):
            for k in (e.a, e.b):
                self.at[k].remove(i)
                self._forget(k)
        if stub:
            return
        if len(edges) == 1:
            self.out.append((edges[0].coords, length, edges[0].samples))
            return
        chunks = [e.coords[::-1] if r else e.coords for e, (_, r) in zip(edges, parts, strict=True)]
        coords = np.concatenate([chunks[0]] + [c[1:] for c in chunks[1:]])
        samples = np.concatenate([e.samples for e in edges])
        self.out.append((canonical(coords, ring), length, samples))

    def finish(self) -> list[Batch]:
        """The lines still held (none, once the last strip was added)."""
        self._prune()
        self._emit_ready()
        return self._flush()

    def _flush(self) -> list[Batch]:
        """The lines emitted so far, in the CRS, with ``class``, ``length_m`` and ``width_m``
        (twice the median distance to the edge, less half a pixel: see the module's docstring)."""
        if not self.out:
            return []
        coords = [c for c, _, _ in self.out]
        idx = np.repeat(np.arange(len(coords)), [len(c) for c in coords])
        world = to_world(shapely.linestrings(np.concatenate(coords), indices=idx), self.transform)
        pixel = (self.pixel_m[0] + self.pixel_m[1]) / 2
        width = np.maximum(2 * medians([s for _, _, s in self.out]) - pixel / 2, pixel)
        fields = {
            "class": np.full(len(coords), self.name, dtype=object),
            "length_m": np.array([n for _, n, _ in self.out]),
            "width_m": np.round(width, 3),
        }
        self.out = []
        return [Batch(self.name, world, fields)]
