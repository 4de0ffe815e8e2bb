"""scene: opening, validation, bands, ground scale, the render grid, corruption watch."""

from __future__ import annotations

import math

import pytest
import rasterio
from affine import Affine
from geotiffs import noise_rgb, write_geotiff
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from geomap_gan.errors import InputError
from geomap_gan.rendering import scene
from geomap_gan.rendering.grid import ground_scale, model_grid

CI = ColorInterp


# ---- opening -------------------------------------------------------------------------------------
def test_open_missing_and_not_a_raster(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        scene.open_raster(tmp_path / "missing.tif")
    text = tmp_path / "notes.tif"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a raster"):
        scene.open_raster(text)
    with pytest.raises(InputError, match="folder"):
        scene.open_raster(tmp_path)


def test_georeferencing_checks(tmp_path):
    plain = write_geotiff(tmp_path / "plain.tif", noise_rgb(8, 8), crs=None)
    with scene.open_raster(plain) as ds:
        with pytest.raises(InputError, match="no CRS.*--allow-ungeoreferenced"):
            scene.check_georeferencing(ds, False)
        assert scene.check_georeferencing(ds, True) is False
    no_transform = tmp_path / "crs_only.tif"
    with rasterio.open(no_transform, "w", driver="GTiff", width=8, height=8, count=3,
                       dtype="uint8", crs="EPSG:32631") as d:  # fmt: skip
        d.write(noise_rgb(8, 8))
    with scene.open_raster(no_transform) as ds, pytest.raises(InputError, match="geotransform"):
        scene.check_georeferencing(ds, False)
    rotated = write_geotiff(
        tmp_path / "rot.tif", noise_rgb(8, 8), transform=Affine(2, 0.5, 0, 0.5, -2, 0)
    )
    with scene.open_raster(rotated) as ds, pytest.raises(InputError, match="rotated"):
        scene.check_georeferencing(ds, False)


# ---- bands ---------------------------------------------------------------------------------------
def test_select_bands_from_colour_interpretation(tmp_path):
    path = write_geotiff(
        tmp_path / "bgrn.tif",
        noise_rgb(4, 4, bands=4),
        colorinterp=[CI.blue, CI.green, CI.red, CI.undefined],
        photometric="MINISBLACK",
    )
    with scene.open_raster(path) as ds:
        assert scene.select_bands(ds, None) == (3, 2, 1)
        assert scene.select_bands(ds, (4, 3, 2)) == (4, 3, 2)
        with pytest.raises(InputError, match="band 5 is out of range.*bands 1 to 4"):
            scene.select_bands(ds, (1, 2, 5))
        with pytest.raises(InputError, match="three band numbers"):
            scene.select_bands(ds, (1, 2))


def test_select_bands_default_and_single_band(tmp_path):
    four = write_geotiff(tmp_path / "four.tif", noise_rgb(4, 4, bands=4), photometric="MINISBLACK")
    with scene.open_raster(four) as ds:
        assert scene.select_bands(ds, None) == (1, 2, 3)
    grey = write_geotiff(tmp_path / "grey.tif", noise_rgb(4, 4, bands=1))
    with scene.open_raster(grey) as ds, pytest.raises(InputError, match="1 band.*colour"):
        scene.select_bands(ds, None)


# ---- ground sample distance ----------------------------------------------------------------------
def test_ground_scale_projected_metres_and_feet():
    t = Affine(1, 0, 500000, 0, -1, 5000000)
    assert ground_scale(CRS.from_epsg(32631), t, 10, 10) == (1.0, 1.0)
    kx, _ = ground_scale(CRS.from_epsg(2263), t, 10, 10)  # NY state plane, US feet
    assert kx == pytest.approx(0.3048006, rel=1e-6)


def test_ground_scale_geographic_degrees():
    t = Affine(0.001, 0, 10.0, 0, -0.001, 60.0005)
    kx, ky = ground_scale(CRS.from_epsg(4326), t, 1, 1)
    assert kx == pytest.approx(55_800, rel=0.002)  # metres per degree of longitude at 60 N
    assert ky == pytest.approx(111_420, rel=0.002)  # of latitude at 60 N


def test_ground_scale_web_mercator_shrinks_with_latitude():
    lat = 60.0
    y = 6378137.0 * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    t = Affine(1, 0, 0, 0, -1, y + 0.5)
    kx, ky = ground_scale(CRS.from_epsg(3857), t, 1, 1)
    assert kx == ky
    assert kx == pytest.approx(math.cos(math.radians(lat)), rel=0.005)
    equator = ground_scale(CRS.from_epsg(3857), Affine(1, 0, 0, 0, -1, 0.5), 1, 1)
    assert equator[0] == pytest.approx(1.0, abs=1e-6)


def test_model_grid_keeps_corner_and_footprint(tmp_path):
    path = write_geotiff(tmp_path / "a.tif", noise_rgb(100, 150), res=0.5)
    with scene.open_raster(path) as ds:
        grid, scene_gsd = model_grid(ds, 2.0, max_upscale=16)
        assert scene_gsd == pytest.approx(0.5)
        assert (grid.width, grid.height) == (38, 25)  # 75 m x 50 m at 2 m, rounded
        assert grid.transform.c == ds.transform.c and grid.transform.f == ds.transform.f
        assert grid.transform.a == pytest.approx(2.0)
        same, _ = model_grid(ds, 0.5, max_upscale=16)
        assert (same.width, same.height, same.transform) == (150, 100, ds.transform)
        with pytest.raises(InputError, match="coarser.*--gsd"):
            model_grid(ds, 0.01, max_upscale=16)


def test_corruption_watch_turns_gdal_warnings_into_input_errors():
    import logging

    gdal = logging.getLogger("rasterio._err")
    with scene.watch_corruption() as watch:
        gdal.warning("CPLE_AppDefined:TIFFReadDirectory:Unknown field with tag 33550 encountered")
        watch.check("x.tif")  # benign tag warnings are not corruption
        gdal.warning("CPLE_AppDefined:JPEGLib:Corrupt JPEG data: premature end of data segment")
        with pytest.raises(InputError, match="Corrupt JPEG data.*truncated or corrupt"):
            watch.check("x.tif")


def test_corruption_watches_of_concurrent_renders_keep_to_their_own_reads():
    """Two renders in one process: damage met by one render's reader thread is raised there, not
    in the other render, and the shared logger's level comes back when both are done."""
    import logging
    import threading

    gdal = logging.getLogger("rasterio._err")
    level = gdal.level
    errors: dict[str, str] = {}
    started = threading.Barrier(2)

    def read(name: str, damaged: bool) -> None:
        with scene.watch_corruption() as watch:
            started.wait()
            if damaged:
                gdal.warning("CPLE_AppDefined:JPEGLib:Corrupt JPEG data: bad Huffman code")
            started.wait()  # both have "read" before either checks
            try:
                watch.check(name)
            except InputError as exc:
                errors[name] = str(exc)

    threads = [threading.Thread(target=read, args=(n, d)) for n, d in (("a", True), ("b", False))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert list(errors) == ["a"] and "Corrupt JPEG data" in errors["a"]
    assert gdal.level == level
