"""Areas of interest: parsing GeoJSON/WKT, their CRS, pixel coordinates."""

from __future__ import annotations

import json

import pytest
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box

from geomap_gan.errors import InputError
from geomap_gan.rendering.aoi import aoi_to_pixels, parse_aoi
from geomap_gan.rendering.grid import Grid

SQUARE = "POLYGON((10 50, 11 50, 11 51, 10 51, 10 50))"


def test_wkt_defaults_to_wgs84_and_ewkt_names_its_crs():
    geom, crs = parse_aoi(SQUARE)
    assert crs == CRS.from_epsg(4326) and geom.area == pytest.approx(1.0)
    _, crs = parse_aoi("SRID=32631;" + SQUARE)
    assert crs == CRS.from_epsg(32631)
    _, crs = parse_aoi(SQUARE, aoi_crs="EPSG:3857")
    assert crs == CRS.from_epsg(3857)


def test_geojson_feature_collection_from_a_file(tmp_path):
    features = [
        {"type": "Feature", "properties": {}, "geometry": box(0, 0, 1, 1).__geo_interface__},
        {"type": "Feature", "properties": {}, "geometry": box(2, 0, 3, 1).__geo_interface__},
    ]
    doc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "EPSG:32631"}},
        "features": features,
    }
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps(doc))
    geom, crs = parse_aoi(str(path))
    assert geom.area == pytest.approx(2.0) and crs == CRS.from_epsg(32631)


@pytest.mark.parametrize(
    ("aoi", "message"),
    [
        ("POLYGON EMPTY", "empty"),
        ("LINESTRING(0 0, 1 1)", "polygon with an area"),
        ("POLYGON((0 0, 1 1, 2 2, 0 0))", "polygon with an area"),
        ("{not json", "not valid GeoJSON or WKT"),
        ("missing.geojson", "neither a file nor"),
    ],
)
def test_bad_aois(aoi, message):
    with pytest.raises(InputError, match=message):
        parse_aoi(aoi)


def test_unknown_crs():
    with pytest.raises(InputError, match="unknown AOI CRS"):
        parse_aoi(SQUARE, aoi_crs="EPSG:99999")


def test_aoi_to_pixels_and_outside():
    grid = Grid(100, 50, Affine(2, 0, 1000, 0, -2, 2000), CRS.from_epsg(32631))
    px = aoi_to_pixels(box(1010, 1960, 1030, 1980), CRS.from_epsg(32631), grid)
    assert px.bounds == pytest.approx((5, 10, 15, 20))
    with pytest.raises(InputError, match="does not overlap"):
        aoi_to_pixels(box(0, 0, 10, 10), CRS.from_epsg(32631), grid)
    with pytest.raises(InputError, match="georeferenced"):
        aoi_to_pixels(box(0, 0, 1, 1), CRS.from_epsg(4326), Grid(10, 10, Affine.identity(), None))
