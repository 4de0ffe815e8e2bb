"""Area classes (water, park) as polygons, assembled strip by strip exactly as if the map were
polygonized whole.

All geometry stays in pixel coordinates (x = column, y = row of the whole map, pixel corners on
integers) until a polygon is final: coordinates are then exact, so pieces of one lake cut by a
strip border share their border edges exactly and their union is exact. Only final polygons go
to world coordinates.

Per strip: GDAL polygonizes each class mask (4-connected, as ``rasterio.features.shapes``);
pieces touching the strip's top are unioned with the previous strip's pieces touching it
(those that share a border segment with them), and pieces touching the strip's bottom stay
open. Final polygons wait in a pool until no open polygon and no later row lies within the
simplification reach of their group (polygons of any area class within that distance of one
another): each group is then cleaned and simplified as one coverage, so shared boundaries move
together and the result does not depend on where the strips fell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import LineString, Polygon, shape

from geomap_gan.legend import CLASSES
from geomap_gan.vector.features import Batch, to_world


def polygonize(mask: np.ndarray, row0: int) -> list[Polygon]:
    """The 4-connected regions of ``mask`` (rows from ``row0`` of the map) as polygons in pixel
    coordinates, holes included."""
    if not mask.any():
        return []
    found = shapes(
        mask.view(np.uint8), mask=mask, connectivity=4, transform=Affine.translation(0, row0)
    )
    return [shape(geom) for geom, _ in found]


def canonical(geoms: np.ndarray) -> np.ndarray:
    """One form per polygon, whatever strips made it: a union leaves collinear vertices where
    pieces met, and ring starts depend on the union; normalize (rings start at their lowest
    corner, a corner is never collinear), drop collinear vertices (exact on integer
    coordinates), normalize again."""
    geoms = shapely.normalize(geoms)
    return shapely.normalize(shapely.simplify(geoms, 0.0, preserve_topology=False))


def groups(geoms: np.ndarray, reach: float, extra: Sequence[object] = ()) -> np.ndarray:
    """Component label of each geometry (and of each ``extra`` one, appended), where geometries
    within ``reach`` of one another are connected (``reach`` 0: touching)."""
    allg = np.concatenate([geoms, np.asarray(extra, dtype=object)]) if len(extra) else geoms
    n = len(allg)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    tree = shapely.STRtree(allg)
    i, j = (
        tree.query(allg, predicate="dwithin", distance=reach)
        if reach > 0
        else tree.query(allg, predicate="intersects")
    )
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def join_pieces(carried: list[Polygon], pieces: list[Polygon], row0: int) -> list[Polygon]:
    """Union the pieces touching row ``row0`` with the carried polygons they continue (sharing a
    border segment, not just a corner: 4-connectivity, as GDAL polygonizes)."""
    top = [p for p in pieces if p.bounds[1] == row0]
    rest = [p for p in pieces if p.bounds[1] != row0]
    cands = np.array(carried + top, dtype=object)
    if not carried or not top:
        return list(cands) + rest
    i, j = shapely.STRtree(cands).query(cands, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    share = shapely.relate_pattern(cands[i], cands[j], "****1****")
    n = len(cands)
    graph = coo_matrix(
        (np.ones(int(share.sum()), dtype=np.int8), (i[share], j[share])), shape=(n, n)
    )
    _, label = connected_components(graph, directed=False)
    joined = [shapely.union_all(cands[label == k]) for k in range(label.max() + 1)]
    return _polygons(joined) + rest


def _polygons(geoms: Sequence[object]) -> list[Polygon]:
    """The polygons in ``geoms``, multi-parts split (a union of edge-sharing pieces is one)."""
    out: list[Polygon] = []
    for g in geoms:
        out.extend(p for p in shapely.get_parts(g) if isinstance(p, Polygon) and not p.is_empty)
    return out


def fill_and_drop(poly: Polygon, min_area: float) -> Polygon | None:
    """Fill holes under ``min_area`` (pixels²) and drop the polygon if it is under it. Whatever
    lies in a filled hole is smaller than the hole, so it is dropped too: no overlap results."""
    if min_area <= 0:
        return poly
    holes = [r for r in poly.interiors if Polygon(r).area >= min_area]
    if len(holes) != len(poly.interiors):
        poly = Polygon(poly.exterior, holes)
    return poly if poly.area >= min_area else None


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
        self.tolerance = tolerance
        # Coverage simplification moves a boundary up to about its tolerance, so polygons closer
        # than twice that are simplified together (their edges then cannot cross).
        self.reach = 2.0 * tolerance if tolerance > 0 else 0.0
        self.open: dict[str, list[Polygon]] = {c: [] for c in self.classes}
        self.pool: list[tuple[str, Polygon]] = []

    def add(self, masks: dict[str, np.ndarray], row0: int, row1: int) -> list[Batch]:
        """Take rows [row0, row1) of the class masks; return the polygons now final."""
        more = row1 < self.height
        for name in self.classes:
            joined = join_pieces(self.open[name], polygonize(masks[name], row0), row0)
            is_open = [more and p.bounds[3] == row1 for p in joined]
            self.open[name] = [p for p, o in zip(joined, is_open, strict=True) if o]
            self.pool.extend((name, p) for p, o in zip(joined, is_open, strict=True) if not o)
        return self._emit(row1 if more else None)

    def _emit(self, row1: int | None) -> list[Batch]:
        """Emit every pool group that no open polygon nor any row from ``row1`` can still
        join."""
        if not self.pool:
            return []
        geoms = np.array([p for _, p in self.pool], dtype=object)
        extra: list[object] = [p for ps in self.open.values() for p in ps]
        if row1 is not None:
            extra.append(LineString([(-1e9, row1), (1e9, row1)]))
        label = groups(geoms, self.reach, extra)
        blocked = set(label[len(geoms) :].tolist())
        done = np.array([lab not in blocked for lab in label[: len(geoms)]], dtype=bool)
        ready = [self.pool[k] for k in np.flatnonzero(done)]
        ready_labels = label[: len(geoms)][done]
        self.pool = [self.pool[k] for k in np.flatnonzero(~done)]
        return self._finish(ready, ready_labels)

    def _finish(self, items: list[tuple[str, Polygon]], labels: np.ndarray) -> list[Batch]:
        """Clean, simplify (one coverage per group) and place final polygons."""
        kept: list[tuple[int, str, Polygon]] = []
        for (name, poly), lab in zip(items, labels, strict=True):
            cleaned = fill_and_drop(poly, self.min_area)
            if cleaned is not None:
                kept.append((int(lab), name, cleaned))
        if not kept:
            return []
        names = np.array([n for _, n, _ in kept], dtype=object)
        labs = np.array([lab for lab, _, _ in kept])
        geoms = canonical(np.array([p for _, _, p in kept], dtype=object))
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
        return out

    def _batches(self, geoms: np.ndarray, names: np.ndarray) -> list[Batch]:
        """Valid polygons in world coordinates with ``class`` and ``area_m2``, one batch per
        class."""
        bad = ~shapely.is_valid(geoms)
        if bad.any():  # the last resort: coverage simplification keeps rings valid as a rule
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
