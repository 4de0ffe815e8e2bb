"""Area classes (water, park) as polygons, assembled strip by strip exactly as if the map were
polygonized whole.

All geometry stays in pixel coordinates (x = column, y = row of the whole map, pixel corners on
integers) until a polygon is final: coordinates are then exact, so pieces of one lake cut by a
strip border share their border edges exactly and their union is exact. Only final polygons go
to world coordinates.

Per strip, each class mask is polygonized (4-connected regions, as GDAL's polygonize, traced
with numpy: :mod:`geomap_gan.vector.regions`) into *pieces*, with a vertex at every pixel corner
of the strip's top and bottom lines. A polygon is kept as its pieces until it is final: pieces
on a strip's top join the pieces above that they share a border segment with (union-find over
piece ids), and a polygon is final once none of its pieces reaches the strip's bottom; its
pieces then match vertex for vertex along the cuts, and their union is a coverage union, done
once. When simplification can move a boundary (see ``PolygonAssembler``), final polygons also
wait for their group (polygons of any area class within the simplification reach of one
another, found from the pieces) to be final, and each group is cleaned and simplified as one
coverage, so shared boundaries move together. The result does not depend on where the strips
fell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from affine import Affine
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import Polygon

from geomap_gan.legend import CLASSES
from geomap_gan.vector import regions
from geomap_gan.vector.features import Batch, to_world


def polygonize(mask: np.ndarray, row0: int) -> np.ndarray:
    """The 4-connected regions of ``mask`` (rows from ``row0`` of the map) as polygons in pixel
    coordinates, holes included, with a vertex at every pixel corner of the strip's top and
    bottom lines that they pass (:func:`geomap_gan.vector.regions.polygonize`)."""
    return regions.polygonize(mask, row0, cuts=True)


def canonical(geoms: np.ndarray, collinear: np.ndarray | None = None) -> np.ndarray:
    """One form per polygon, whatever strips made it: a union leaves collinear vertices where
    pieces met (and a strip's pieces have them on its top and bottom lines), and ring starts
    depend on the union; normalize (rings start at their lowest corner, a corner is never
    collinear), drop collinear vertices (exact on integer coordinates), normalize again.
    ``collinear``: which polygons may have collinear vertices (default all); the others are
    only normalized."""
    geoms = shapely.normalize(geoms)
    todo = slice(None) if collinear is None else collinear
    geoms[todo] = shapely.normalize(shapely.simplify(geoms[todo], 0.0, preserve_topology=False))
    return geoms


def _one_polygon(geom: object) -> Polygon:
    """The union of pieces that share border segments: one polygon (a shapely union may still
    hand back a collection holding it)."""
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and not p.is_empty]
    if len(parts) != 1:  # pragma: no cover - edge-sharing pieces always union to one
        raise RuntimeError(f"a union of edge-sharing pieces gave {len(parts)} polygons")
    return parts[0]


class _Components:
    """Union-find over polygon ids (numpy arrays, vectorised unions and finds): which polygons
    are within reach of one another, directly or through others."""

    def __init__(self) -> None:
        self.parent = np.zeros(1024, dtype=np.int64)
        self.size = 0

    def add(self, count: int) -> np.ndarray:
        """``count`` new ids, each its own component."""
        ids = np.arange(self.size, self.size + count)
        if self.size + count > len(self.parent):
            grown = np.zeros(max(2 * len(self.parent), self.size + count), dtype=np.int64)
            grown[: self.size] = self.parent[: self.size]
            self.parent = grown
        self.parent[ids] = ids
        self.size += count
        return ids

    def roots(self, ids: np.ndarray) -> np.ndarray:
        """The component (its root id) of each id; paths compressed on the way."""
        ids = np.asarray(ids, dtype=np.int64)
        root = self.parent[ids]
        while True:
            up = self.parent[root]
            if (up == root).all():
                break
            root = up
        self.parent[ids] = root
        return root

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Join the components of each pair (a[k], b[k])."""
        if not len(a):
            return
        ra, rb = self.roots(a), self.roots(b)
        nodes, inv = np.unique(np.concatenate([ra, rb]), return_inverse=True)
        m = len(nodes)
        graph = coo_matrix(
            (np.ones(len(ra), dtype=np.int8), (inv[: len(ra)], inv[len(ra) :])), shape=(m, m)
        )
        label = connected_components(graph, directed=False)[1]
        rep = np.full(label.max() + 1, np.iinfo(np.int64).max)
        np.minimum.at(rep, label, nodes)
        self.parent[nodes] = rep[label]


def fill_and_drop(geoms: np.ndarray, min_area: float) -> np.ndarray:
    """Fill holes under ``min_area`` (pixels²) and drop the polygons under it, all at once: the
    polygons, None where dropped. Whatever lies in a filled hole is smaller than the hole, so
    it is dropped too: no overlap results."""
    if min_area <= 0 or not len(geoms):
        return geoms
    rings, index = shapely.get_rings(geoms, return_index=True)
    shell = np.r_[True, index[1:] != index[:-1]]
    area = shapely.area(shapely.polygons(rings))
    keep = shell | (area >= min_area)
    filled = geoms
    if not keep.all():
        filled = shapely.polygons(rings[keep], indices=index[keep])
    holes = np.bincount(index[keep & ~shell], weights=area[keep & ~shell], minlength=len(geoms))
    big = area[shell] - holes >= min_area
    out = np.full(len(geoms), None, dtype=object)
    out[big] = filled[big]
    return out


class PolygonAssembler:
    """Polygons of the area classes, fed strip by strip, emitted as final batches.

    ``min_area`` and ``tolerance`` are in pixels (² for the area); ``pixel_area_m2`` converts
    areas to square metres.
    """

    def __init__(
        self,
        classes: Sequence[str],
        height: int,
        transform: Affine,
        pixel_area_m2: float,
        min_area: float,
        tolerance: float,
    ) -> None:
        self.classes = tuple(classes)
        self.height = height
        self.transform = transform
        self.pixel_area_m2 = pixel_area_m2
        self.min_area = min_area
        # Coverage simplification (Visvalingam-Whyatt) drops a corner when the triangle it
        # makes with its neighbours is under tolerance² in area; any three pixel corners that
        # are not collinear span at least half a pixel², so below that it changes nothing
        # (canonical() has dropped the collinear ones): skipped, with the grouping it needs.
        self.tolerance = tolerance if tolerance * tolerance >= 0.5 else 0.0
        # Coverage simplification moves a boundary up to about its tolerance, so polygons closer
        # than twice that are simplified together (their edges then cannot cross).
        self.reach = 2.0 * self.tolerance
        # Same polygon (pieces sharing a border segment) and same group (polygons within reach,
        # through any chain): union-finds over piece ids, one id space.
        self.polys = _Components()
        self.groups = _Components()
        # Pieces (polygonized strip parts) of polygons not yet emitted: geometry, class, id,
        # last row (their polygon or its group may still grow into the rows to come), and
        # whether they reach their strip's top or bottom line (vertices at every corner there).
        self.live: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] = (
            np.empty(0, dtype=object),
            np.empty(0, dtype=object),
            np.zeros(0, dtype=np.int64),
            np.zeros(0),
            np.zeros(0, dtype=bool),
        )

    def add(self, masks: dict[str, np.ndarray], row0: int, row1: int) -> list[Batch]:
        """Take rows [row0, row1) of the class masks; return the polygons now final.

        A polygon is kept as its pieces until it is final (no piece on the last row, or the
        map's end), then unioned once. Pieces on the strip's top join the pieces of the strip
        above that they share a border segment with (4-connectivity, as GDAL polygonizes).
        Groups (polygons within ``reach`` of one another, through any chain) come from the
        pieces too: the distance between two polygons is that between their closest pieces,
        and a new piece can only be within reach of pieces of its own strip or of the live
        ones that end within reach above it. A group is final once none of its pieces ends
        within reach of the rows still to come."""
        if not self.classes:
            return []
        more = row1 < self.height
        live_g, live_n, live_i, live_y, live_e = self.live
        new_g, new_n, new_i = [], [], []
        for name in self.classes:
            cut = polygonize(masks[name], row0)
            ids = self.polys.add(len(cut))
            self.groups.add(len(cut))
            above = (live_n == name) & (live_y == row0)
            top = shapely.bounds(cut)[:, 1] == row0 if len(cut) else np.zeros(0, dtype=bool)
            if above.any() and top.any():
                self._join(live_g[above], live_i[above], cut[top], ids[top])
            new_g.append(cut)
            new_n.append(np.full(len(cut), name, dtype=object))
            new_i.append(ids)
        g, n, i = np.concatenate(new_g), np.concatenate(new_n), np.concatenate(new_i)
        box = shapely.bounds(g) if len(g) else np.zeros((0, 4))
        y, edged = box[:, 3], (box[:, 1] == row0) | (box[:, 3] == row1)
        if self.reach > 0 and len(g):
            near = live_y >= row0 - self.reach
            cand_g = np.concatenate([g, live_g[near]])
            cand_i = np.concatenate([i, live_i[near]])
            a, b = shapely.STRtree(cand_g).query(g, predicate="dwithin", distance=self.reach)
            self.groups.union(i[a], cand_i[b])
        live_g, live_n = np.concatenate([live_g, g]), np.concatenate([live_n, n])
        live_i, live_y = np.concatenate([live_i, i]), np.concatenate([live_y, y])
        live_e = np.concatenate([live_e, edged])
        sets = self.groups if self.reach > 0 else self.polys
        roots = sets.roots(live_i)
        final = np.ones(len(live_i), dtype=bool)
        if more:
            final = ~np.isin(roots, roots[live_y >= row1 - self.reach])
        keep = ~final
        self.live = (live_g[keep], live_n[keep], live_i[keep], live_y[keep], live_e[keep])
        return self._emit(live_g[final], live_n[final], live_i[final], roots[final], live_e[final])

    def _join(self, above: np.ndarray, above_ids: np.ndarray, top: np.ndarray,
              top_ids: np.ndarray) -> None:  # fmt: skip
        """Pieces of the strip above and top pieces of this one that share a border segment
        (not just a corner) belong to one polygon."""
        a, b = shapely.STRtree(above).query(top, predicate="intersects")
        share = shapely.relate_pattern(top[a], above[b], "****1****")
        self.polys.union(top_ids[a[share]], above_ids[b[share]])
        self.groups.union(top_ids[a[share]], above_ids[b[share]])

    def _emit(
        self,
        pieces: np.ndarray,
        names: np.ndarray,
        ids: np.ndarray,
        labels: np.ndarray,
        edged: np.ndarray,
    ) -> list[Batch]:
        """The final polygons of these pieces (unioned per polygon), labelled by group."""
        if not len(pieces):
            return []
        poly = self.polys.roots(ids)
        order = np.argsort(poly, kind="stable")
        poly, pieces, names, labels = poly[order], pieces[order], names[order], labels[order]
        edged = edged[order]
        first = np.r_[True, poly[1:] != poly[:-1]]
        starts = np.flatnonzero(first)
        ends = np.r_[starts[1:], len(poly)]
        geoms = pieces[starts].copy()
        joined = ends - starts > 1
        for k in np.flatnonzero(joined):
            geoms[k] = _one_polygon(shapely.coverage_union_all(pieces[starts[k] : ends[k]]))
        return self._finish(geoms, names[starts], labels[starts], joined | edged[starts])

    def _finish(
        self, geoms: np.ndarray, names: np.ndarray, labs: np.ndarray, collinear: np.ndarray
    ) -> list[Batch]:
        """Clean, simplify (one coverage per group) and place final polygons (``collinear``:
        those that may have collinear vertices, see :func:`canonical`)."""
        cleaned = fill_and_drop(geoms, self.min_area)
        kept = shapely.is_geometry(cleaned) if len(cleaned) else np.zeros(0, dtype=bool)
        if not kept.any():
            return []
        geoms = canonical(cleaned[kept], collinear[kept])
        names, labs = names[kept], labs[kept]
        if self.tolerance > 0:
            geoms = self._simplify(geoms, names, labs)
        return self._batches(geoms, names)

    def _simplify(self, geoms: np.ndarray, names: np.ndarray, labs: np.ndarray) -> np.ndarray:
        """Coverage-simplify each group (in a fixed order, so the result is reproducible)."""
        out = np.empty(len(geoms), dtype=object)
        order = {c: i for i, c in enumerate(CLASSES)}
        for lab in np.unique(labs):
            idx = np.flatnonzero(labs == lab)
            wkb = shapely.to_wkb(geoms[idx])
            keys = [(order[str(names[k])], w) for k, w in zip(idx, wkb, strict=True)]
            idx = idx[sorted(range(len(idx)), key=keys.__getitem__)]
            out[idx] = shapely.coverage_simplify(geoms[idx], self.tolerance)
        return shapely.normalize(out)

    def _batches(self, geoms: np.ndarray, names: np.ndarray) -> list[Batch]:
        """Valid polygons in world coordinates with ``class`` and ``area_m2``, one batch per
        class."""
        # Traced regions are valid (as GDAL's), and so are their coverage unions and what
        # dropping collinear vertices or small holes leaves; simplification is checked, and
        # the last resort is make_valid (coverage simplification keeps rings valid as a rule).
        bad = ~shapely.is_valid(geoms) if self.tolerance > 0 else np.zeros(len(geoms), bool)
        if bad.any():
            geoms = geoms.copy()
            geoms[bad] = shapely.make_valid(geoms[bad])
        parts, index = shapely.get_parts(geoms, return_index=True)
        poly = shapely.get_type_id(parts) == 3
        parts, index = parts[poly], index[poly]
        names = names[index]
        world = to_world(parts, self.transform)
        area = shapely.area(parts) * self.pixel_area_m2
        out = []
        for name in self.classes:
            sel = names == name
            if sel.any():
                out.append(
                    Batch(
                        name,
                        world[sel],
                        {
                            "class": np.full(int(sel.sum()), name, dtype=object),
                            "area_m2": area[sel],
                        },
                    )
                )
        return out
