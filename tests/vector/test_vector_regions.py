"""The numpy building blocks of the fast path against what they replace: the region tracer
against GDAL's polygonize, the colour table against the legend's rules on every colour, ring
ordering, and the grouping union-find."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from rasterio.features import shapes
from shapely.geometry import shape

from geomap_gan.legend import DRAW_ORDER, class_masks
from geomap_gan.vector.masks import _classes, colour_table, exclusive
from geomap_gan.vector.polygons import _Components, fill_and_drop
from geomap_gan.vector.regions import polygonize, ring_order


def gdal(mask: np.ndarray, row0: int) -> list[bytes]:
    """GDAL's polygons of the 4-connected regions (rasterio.features.shapes), canonical WKB."""
    found = shapes(mask.view(np.uint8), mask=mask, connectivity=4,
                   transform=(1, 0, 0, 0, 1, row0))  # fmt: skip
    return sorted(shapely.to_wkb(shapely.normalize([shape(g) for g, _ in found])).tolist())


def ours(mask: np.ndarray, row0: int, cuts: bool) -> list[bytes]:
    polys = polygonize(mask, row0, cuts)
    assert shapely.is_valid(polys).all()
    polys = shapely.simplify(polys, 0)  # cut-line vertices are collinear
    return sorted(shapely.to_wkb(shapely.normalize(polys)).tolist())


@pytest.mark.parametrize("cuts", [False, True])
def test_regions_are_gdal_s_polygons_on_random_masks(cuts: bool) -> None:
    rng = np.random.default_rng(7)
    for _ in range(400):
        h, w = rng.integers(1, 24, 2)
        mask = rng.random((h, w)) < rng.uniform(0.1, 0.9)
        assert ours(mask, 3, cuts) == gdal(mask, 3)


def test_saddles_make_valid_rings_as_gdal_does() -> None:
    loop = np.zeros((6, 7), dtype=bool)  # one region meeting itself at a corner: shell + hole
    for y, x in [(2, 3), (1, 3), (1, 4), (1, 5), (2, 5), (3, 5), (3, 4)]:
        loop[y, x] = True
    (poly,) = polygonize(loop)
    assert len(poly.interiors) == 1 and poly.is_valid and poly.area == 7
    diagonal = np.eye(4, dtype=bool)  # four regions meeting at corners: four squares
    assert sorted(shapely.area(polygonize(diagonal))) == [1, 1, 1, 1]
    assert ours(loop, 0, False) == gdal(loop, 0)


def test_cuts_put_a_vertex_on_every_corner_of_the_strip_lines() -> None:
    mask = np.zeros((4, 8), dtype=bool)
    mask[:, 2:7] = True
    (poly,) = polygonize(mask, 10, cuts=True)
    xy = shapely.get_coordinates(poly)
    assert sorted(x for x, y in xy[:-1] if y == 10) == [2, 3, 4, 5, 6, 7]
    assert sorted(x for x, y in xy[:-1] if y == 14) == [2, 3, 4, 5, 6, 7]
    (plain,) = polygonize(mask, 10)
    assert len(plain.exterior.coords) == 5


def test_pieces_of_strips_union_as_a_coverage_to_the_whole() -> None:
    rng = np.random.default_rng(3)
    mask = rng.random((40, 30)) < 0.6
    whole = polygonize(mask)
    pieces = np.concatenate([polygonize(mask[r : r + 7], r, cuts=True) for r in range(0, 40, 7)])
    union = shapely.coverage_union_all(pieces)
    assert union.equals(shapely.union_all(whole))


def test_ring_order_walks_each_cycle_from_its_lowest_element() -> None:
    succ = np.array([3, 0, 2, 5, 1, 4])  # cycles 0->3->5->4->1->0 and 2->2
    order, ring = ring_order(succ)
    assert order.tolist() == [0, 3, 5, 4, 1, 2] and ring.tolist() == [0, 0, 0, 0, 0, 1]


def test_colour_table_is_the_legend_s_rules_on_every_colour() -> None:
    code = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([code & 255, (code >> 8) & 255, code >> 16], axis=-1).astype(np.uint8)
    masks = exclusive(class_masks(rgb), np.ones(len(code), dtype=bool))
    expected = np.zeros(len(code), dtype=np.uint8)
    for k, name in enumerate(DRAW_ORDER):
        expected[masks[name]] = k + 1
    assert (colour_table() == expected).all()
    img = rgb[: 4096 * 64].reshape(64, 4096, 3)
    planar = np.ascontiguousarray(np.moveaxis(img, -1, 0))
    assert (_classes(planar, colour_table()) == _classes(planar, None)).all()


def test_fill_and_drop_all_at_once() -> None:
    ring = shapely.box(0, 0, 10, 10)
    holes = shapely.Polygon(ring.exterior, [shapely.box(1, 1, 2, 2).exterior,
                                            shapely.box(4, 4, 8, 8).exterior])  # fmt: skip
    out = fill_and_drop(np.array([holes, shapely.box(0, 0, 2, 2), ring], dtype=object), 5)
    assert out[0].equals(shapely.Polygon(ring.exterior, [shapely.box(4, 4, 8, 8).exterior]))
    assert out[1] is None and out[2].equals(ring)


def test_components_union_and_roots() -> None:
    c = _Components()
    ids = c.add(5000)  # grows past its first allocation
    c.union(ids[[0, 2, 4]], ids[[2, 4, 4999]])
    roots = c.roots(ids)
    assert len({roots[0], roots[2], roots[4], roots[4999]}) == 1
    assert len(set(roots.tolist())) == 5000 - 3


@pytest.mark.parametrize("kind", ["rgb", "rgba", "nodata"])
def test_the_colour_table_path_reads_masks_as_the_rules_path(tmp_path, monkeypatch, kind) -> None:
    """Large maps are read straight into R, G, B, 0 pixels and classified by the table (alpha
    and nodata honoured); forced on a small map, it gives the rules path's layers."""
    from vector_maps import canvas, paint, read_layer, write_map

    import geomap_gan.vector.masks as masks
    from geomap_gan.vector import vectorize

    img = paint(canvas(70, 50), "water", slice(5, 30), slice(5, 30))
    paint(img, "park", slice(35, 60), slice(5, 45))
    paint(img, "road", slice(30, 34), slice(0, 50))
    if kind == "rgba":
        alpha = np.full((70, 50, 1), 255, dtype=np.uint8)
        alpha[40:70, 30:50] = 0
        img = np.concatenate([img, alpha], axis=-1)
        src = write_map(tmp_path / "m.tif", img, photometric="RGB", alpha="YES", tiled=True)
    elif kind == "nodata":
        img[50:70, 0:20] = 0
        src = write_map(tmp_path / "m.tif", img, nodata=0)
    else:
        src = write_map(tmp_path / "m.tif", img)
    vectorize(src, tmp_path / "rules.gpkg")
    monkeypatch.setattr(masks, "TABLE_PIXELS", 0)
    vectorize(src, tmp_path / "table.gpkg")
    for layer in ("water", "park", "road"):
        a, fa = read_layer(tmp_path / "rules.gpkg", layer)
        b, fb = read_layer(tmp_path / "table.gpkg", layer)
        assert len(a) == len(b) > 0
        assert all(x.equals_exact(y, 0) for x, y in zip(a, b, strict=True))
    park, _ = read_layer(tmp_path / "table.gpkg", "park")
    if kind != "rgb":  # the masked corner is no park
        assert sum(p.area for p in park) < 25 * 40 * 1.9 * 1.9
