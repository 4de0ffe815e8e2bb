"""Water and park polygons: exact geometry on crafted maps, holes, clean-up, exclusive classes,
and strips that change nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from rasterio.features import rasterize
from vector_maps import GSD, TRANSFORM, canvas, iou, paint, read_layer, to_pixels, write_map

from geomap_gan.legend import class_masks
from geomap_gan.vector import VectorizeOptions, vectorize
from geomap_gan.vector.masks import exclusive

PX = GSD * GSD  # m² per pixel


def lake_with_island(tmp_path: Path) -> Path:
    img = paint(canvas(20, 20), "water", slice(5, 15), slice(5, 15))
    return write_map(tmp_path / "lake.tif", paint(img, "park", slice(9, 11), slice(9, 11)))


def test_square_lake_with_island_is_one_polygon_with_one_exact_hole(tmp_path, outputs):
    opts = VectorizeOptions(layers="water,park", min_area=0, simplify=0)
    vectorize(lake_with_island(tmp_path), outputs / "m.gpkg", opts)
    water, fields = read_layer(outputs / "m.gpkg", "water")
    assert len(water) == 1 and water[0].geom_type == "Polygon"
    lake = to_pixels(water)[0]
    assert len(lake.interiors) == 1
    assert shapely.Polygon(lake.interiors[0]).normalize().equals_exact(
        shapely.box(9, 9, 11, 11).normalize(), 1e-6)  # fmt: skip
    assert shapely.Polygon(lake.exterior).equals(shapely.box(5, 5, 15, 15))
    assert fields["class"].tolist() == ["water"]
    assert fields["area_m2"][0] == pytest.approx(96 * PX)
    park, fields = read_layer(outputs / "m.gpkg", "park")
    assert len(park) == 1 and fields["area_m2"][0] == pytest.approx(4 * PX)
    assert shapely.intersection(water[0], park[0]).area == pytest.approx(0, abs=1e-9)


def test_min_area_fills_small_holes_and_drops_small_polygons(tmp_path, outputs):
    # The 2x2 island (14.4 m²) is under the default 15 m²: the hole is filled and the island,
    # smaller than the hole it sat in, dropped; a 3x3 park (32 m²) stays.
    img = np.array(canvas(20, 30))
    paint(img, "water", slice(5, 15), slice(5, 15))
    paint(img, "park", slice(9, 11), slice(9, 11))
    paint(img, "park", slice(2, 5), slice(20, 23))
    paint(img, "park", slice(10, 12), slice(20, 22))  # 2x2 on its own: dropped
    vectorize(write_map(tmp_path / "m.tif", img), outputs / "m.gpkg", VectorizeOptions())
    water, fields = read_layer(outputs / "m.gpkg", "water")
    assert len(water) == 1 and len(water[0].interiors) == 0
    assert fields["area_m2"][0] == pytest.approx(100 * PX)
    park, fields = read_layer(outputs / "m.gpkg", "park")
    assert fields["area_m2"].tolist() == pytest.approx([9 * PX])


def blobby_map() -> np.ndarray:
    """Water and park blobs with slanted, touching boundaries (a lake with a park shore, an
    island, a river) on a 96 x 80 map."""
    yy, xx = np.mgrid[0:96, 0:80]
    img = canvas(96, 80)
    img[(yy - 40) ** 2 + (xx - 38) ** 2 < 30**2] = (203, 223, 172)  # park
    img[(yy - 45) ** 2 / 1.5 + (xx - 35) ** 2 < 20**2] = (177, 208, 254)  # lake
    img[(yy - 45) ** 2 + (xx - 33) ** 2 < 5**2] = (203, 223, 172)  # wooded island
    img[np.abs(xx - 0.4 * yy - 50) < 3] = (177, 208, 254)  # a river crossing everything
    return img


@pytest.mark.parametrize("rows", [1, 5, 16])
@pytest.mark.parametrize("simplify", [1.0, 2.5])  # 2.5 m moves shared boundaries: coverage
def test_strips_give_the_same_polygons_as_the_whole_map(tmp_path, outputs, rows, simplify):
    src = write_map(tmp_path / "m.tif", blobby_map())
    vectorize(src, outputs / "whole.gpkg", VectorizeOptions(layers="water,park", simplify=simplify))
    opts = VectorizeOptions(layers="water,park", strip_rows=rows, simplify=simplify)
    vectorize(src, outputs / "strips.gpkg", opts)
    for layer in ("water", "park"):
        whole, fw = read_layer(outputs / "whole.gpkg", layer)
        strips, fs = read_layer(outputs / "strips.gpkg", layer)
        key = np.argsort([g.wkb for g in whole]), np.argsort([g.wkb for g in strips])
        assert len(whole) == len(strips)
        assert all(a.equals_exact(b, 0) for a, b in zip(whole[key[0]], strips[key[1]], strict=True))
        assert fw["area_m2"][key[0]].tolist() == fs["area_m2"][key[1]].tolist()


def test_lake_crossing_strip_borders_is_one_feature(tmp_path, outputs):
    img = paint(canvas(40, 30), "water", slice(3, 37), slice(4, 20))
    img = paint(img, "water", slice(10, 30), slice(20, 26))
    opts = VectorizeOptions(layers="water", strip_rows=4, min_area=0, simplify=0)
    vectorize(write_map(tmp_path / "m.tif", img), outputs / "m.gpkg", opts)
    water, fields = read_layer(outputs / "m.gpkg")
    assert len(water) == 1
    assert fields["area_m2"][0] == pytest.approx((34 * 16 + 20 * 6) * PX)
    assert shapely.get_num_coordinates(water[0]) == 9  # 8 corners, no seam vertices


@pytest.mark.parametrize("simplify", [1.0, 2.0])
def test_classes_do_not_overlap_and_round_trip(tmp_path, outputs, simplify):
    img = blobby_map()
    opts = VectorizeOptions(layers="water,park", simplify=simplify)
    vectorize(write_map(tmp_path / "m.tif", img), outputs / "m.gpkg", opts)
    masks = exclusive(class_masks(img), np.ones(img.shape[:2], dtype=bool))
    water, _ = read_layer(outputs / "m.gpkg", "water")
    park, _ = read_layer(outputs / "m.gpkg", "park")
    assert shapely.is_valid(np.concatenate([water, park])).all()
    overlap = shapely.intersection(shapely.union_all(water), shapely.union_all(park)).area
    assert overlap < 1e-6 * GSD * GSD
    for geoms, name in ((water, "water"), (park, "park")):
        back = rasterize(geoms, out_shape=img.shape[:2], transform=TRANSFORM).astype(bool)
        assert iou(back, masks[name]) >= (0.98 if simplify <= 1 else 0.95)  # smoothed: thin rings


def test_masked_pixels_belong_to_no_class(tmp_path, outputs):
    img = paint(canvas(20, 20), "water", slice(0, 20), slice(0, 20))
    alpha = np.full((20, 20, 1), 255, dtype=np.uint8)
    alpha[:, 10:] = 0
    src = write_map(tmp_path / "m.tif", np.concatenate([img, alpha], -1), photometric="RGB",
                    alpha="YES")  # fmt: skip
    vectorize(src, outputs / "a.gpkg", VectorizeOptions(layers="water", simplify=0))
    water, _ = read_layer(outputs / "a.gpkg")
    assert to_pixels(water)[0].normalize().equals_exact(shapely.box(0, 0, 10, 20).normalize(), 1e-6)
    img[5:10] = 0  # nodata=0 in all bands: masked
    src = write_map(tmp_path / "n.tif", img, nodata=0)
    vectorize(src, outputs / "n.gpkg", VectorizeOptions(layers="water", simplify=0))
    water, fields = read_layer(outputs / "n.gpkg")
    assert len(water) == 2 and sorted(fields["area_m2"]) == pytest.approx([100 * PX, 200 * PX])


def test_a_class_with_no_pixels_gives_an_empty_layer(tmp_path, outputs):
    img = paint(canvas(10, 10), "park", slice(2, 8), slice(2, 8))
    result = vectorize(write_map(tmp_path / "m.tif", img), outputs / "m.gpkg")
    assert result.features == {"road": 0, "water": 0, "park": 1, "highway": 0}
    water, fields = read_layer(outputs / "m.gpkg", "water")
    assert len(water) == 0 and set(fields) == {"class", "area_m2"}
