"""rasterio layer: validation, bands, ground resolution, scaling, reads, output handling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from geotiffs import noise_rgb, write_geotiff
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from geomap_gan import raster
from geomap_gan.errors import InputError

CI = ColorInterp


# ---- opening -------------------------------------------------------------------------------------
def test_open_missing_and_not_a_raster(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        raster.open_raster(tmp_path / "missing.tif")
    text = tmp_path / "notes.tif"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a raster"):
        raster.open_raster(text)
    with pytest.raises(InputError, match="folder"):
        raster.open_raster(tmp_path)


def test_georeferencing_checks(tmp_path):
    plain = write_geotiff(tmp_path / "plain.tif", noise_rgb(8, 8), crs=None)
    with raster.open_raster(plain) as ds:
        with pytest.raises(InputError, match="no CRS.*--allow-ungeoreferenced"):
            raster.check_georeferencing(ds, False)
        assert raster.check_georeferencing(ds, True) is False
    no_transform = tmp_path / "crs_only.tif"
    with rasterio.open(no_transform, "w", driver="GTiff", width=8, height=8, count=3,
                       dtype="uint8", crs="EPSG:32631") as d:  # fmt: skip
        d.write(noise_rgb(8, 8))
    with raster.open_raster(no_transform) as ds, pytest.raises(InputError, match="geotransform"):
        raster.check_georeferencing(ds, False)
    rotated = write_geotiff(
        tmp_path / "rot.tif", noise_rgb(8, 8), transform=Affine(2, 0.5, 0, 0.5, -2, 0)
    )
    with raster.open_raster(rotated) as ds, pytest.raises(InputError, match="rotated"):
        raster.check_georeferencing(ds, False)


# ---- bands ---------------------------------------------------------------------------------------
def test_select_bands_from_colour_interpretation(tmp_path):
    path = write_geotiff(
        tmp_path / "bgrn.tif",
        noise_rgb(4, 4, bands=4),
        colorinterp=[CI.blue, CI.green, CI.red, CI.undefined],
        photometric="MINISBLACK",
    )
    with raster.open_raster(path) as ds:
        assert raster.select_bands(ds, None) == (3, 2, 1)
        assert raster.select_bands(ds, (4, 3, 2)) == (4, 3, 2)
        with pytest.raises(InputError, match="band 5 is out of range.*bands 1 to 4"):
            raster.select_bands(ds, (1, 2, 5))
        with pytest.raises(InputError, match="three band numbers"):
            raster.select_bands(ds, (1, 2))


def test_select_bands_default_and_single_band(tmp_path):
    four = write_geotiff(tmp_path / "four.tif", noise_rgb(4, 4, bands=4), photometric="MINISBLACK")
    with raster.open_raster(four) as ds:
        assert raster.select_bands(ds, None) == (1, 2, 3)
    grey = write_geotiff(tmp_path / "grey.tif", noise_rgb(4, 4, bands=1))
    with raster.open_raster(grey) as ds, pytest.raises(InputError, match="1 band.*colour"):
        raster.select_bands(ds, None)


# ---- ground sample distance ----------------------------------------------------------------------
def test_ground_scale_projected_metres_and_feet():
    t = Affine(1, 0, 500000, 0, -1, 5000000)
    assert raster.ground_scale(CRS.from_epsg(32631), t, 10, 10) == (1.0, 1.0)
    kx, _ = raster.ground_scale(CRS.from_epsg(2263), t, 10, 10)  # NY state plane, US feet
    assert kx == pytest.approx(0.3048006, rel=1e-6)


def test_ground_scale_geographic_degrees():
    t = Affine(0.001, 0, 10.0, 0, -0.001, 60.0005)
    kx, ky = raster.ground_scale(CRS.from_epsg(4326), t, 1, 1)
    assert kx == pytest.approx(55_800, rel=0.002)  # metres per degree of longitude at 60 N
    assert ky == pytest.approx(111_420, rel=0.002)  # of latitude at 60 N


def test_ground_scale_web_mercator_shrinks_with_latitude():
    lat = 60.0
    y = 6378137.0 * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    t = Affine(1, 0, 0, 0, -1, y + 0.5)
    kx, ky = raster.ground_scale(CRS.from_epsg(3857), t, 1, 1)
    assert kx == ky
    assert kx == pytest.approx(math.cos(math.radians(lat)), rel=0.005)
    equator = raster.ground_scale(CRS.from_epsg(3857), Affine(1, 0, 0, 0, -1, 0.5), 1, 1)
    assert equator[0] == pytest.approx(1.0, abs=1e-6)


def test_model_grid_keeps_corner_and_footprint(tmp_path):
    path = write_geotiff(tmp_path / "a.tif", noise_rgb(100, 150), res=0.5)
    with raster.open_raster(path) as ds:
        grid, scene_gsd = raster.model_grid(ds, 2.0, max_upscale=16)
        assert scene_gsd == pytest.approx(0.5)
        assert (grid.width, grid.height) == (38, 25)  # 75 m x 50 m at 2 m, rounded
        assert grid.transform.c == ds.transform.c and grid.transform.f == ds.transform.f
        assert grid.transform.a == pytest.approx(2.0)
        same, _ = raster.model_grid(ds, 0.5, max_upscale=16)
        assert (same.width, same.height, same.transform) == (150, 100, ds.transform)
        with pytest.raises(InputError, match="coarser.*--gsd"):
            raster.model_grid(ds, 0.01, max_upscale=16)


# ---- scaling -------------------------------------------------------------------------------------
def test_percentile_stretch_ignores_nodata_and_nan(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.uniform(1000, 2000, (3, 64, 64)).astype(np.float32)
    data[:, :8] = -9999  # nodata rows
    data[0, 10, 10] = np.nan
    path = write_geotiff(tmp_path / "f.tif", data, nodata=-9999)
    with raster.open_raster(path) as ds:
        s = raster.percentile_stretch(raster.sample_pixels(ds, (1, 2, 3)))
    assert all(1000 <= lo < 1100 for lo in s.low)
    assert all(1900 < hi <= 2000 for hi in s.high)
    out = s.apply(np.array([[[1000.0, 2000.0, np.nan]]] * 3))
    assert out.dtype == np.uint8 and out[0, 0].tolist() == [0, 255, 0]


def test_percentile_stretch_samples_big_scenes_without_reading_all(tmp_path, monkeypatch):
    data = np.tile(np.arange(300, dtype=np.uint16), (3, 300, 1))
    path = write_geotiff(tmp_path / "u16.tif", data, tiled=True, blockxsize=64, blockysize=64)
    monkeypatch.setattr(raster, "STATS_FULL_READ_LIMIT", 1000)
    with raster.open_raster(path) as ds:
        s = raster.percentile_stretch(raster.sample_pixels(ds, (1, 2, 3)))
    assert s.low[0] <= 25 and s.high[0] >= 275  # 2nd and 98th percentiles of 0..299


def test_fixed_stretch_validates():
    assert raster.fixed_stretch((0, 3000)).high == (3000.0,) * 3
    with pytest.raises(InputError, match="MIN < MAX"):
        raster.fixed_stretch((10, 10))


# ---- reading -------------------------------------------------------------------------------------
def test_region_reader_reflects_outside_and_marks_it_invalid(tmp_path):
    data = noise_rgb(20, 30)
    path = write_geotiff(tmp_path / "r.tif", data)
    with raster.open_raster(path) as ds:
        reader = raster.RegionReader(ds, (1, 2, 3), None, "r.tif")
        rgb, valid = reader.read(-5, -3, 40, 26)
    assert rgb.shape == (3, 26, 40) and valid.shape == (26, 40)
    np.testing.assert_array_equal(rgb[:, 3:23, 5:35], data)
    padded = np.pad(data, ((0, 0), (3, 3), (5, 5)), mode="reflect")
    np.testing.assert_array_equal(rgb, padded)
    assert valid[3:23, 5:35].all() and valid.sum() == 20 * 30


def test_region_reader_mirrors_tiny_rasters_as_often_as_needed(tmp_path):
    data = noise_rgb(6, 5)
    path = write_geotiff(tmp_path / "tiny.tif", data)
    with raster.open_raster(path) as ds:
        rgb, valid = raster.RegionReader(ds, (1, 2, 3), None, "tiny").read(-8, -9, 21, 24)
    expected = np.pad(data, ((0, 0), (9, 9), (8, 8)), mode="reflect")
    np.testing.assert_array_equal(rgb, expected)
    assert valid[9:15, 8:13].all() and valid.sum() == 30


def test_region_reader_row_cache_matches_direct_reads_in_any_order(tmp_path):
    """Regions read through the block-aligned row cache (window rows top to bottom, then
    other columns, then back up) equal the reflected raster, nodata included."""
    data = noise_rgb(70, 90)
    data[:, 30:34, 50:] = 0
    path = write_geotiff(
        tmp_path / "tiled.tif", data, nodata=0, tiled=True, blockxsize=16, blockysize=16
    )
    padded = np.pad(data, ((0, 0), (8, 8), (8, 8)), mode="reflect")
    nodata = np.pad((data == 0).all(axis=0), 8, constant_values=True)
    regions = [(-8, y, 106, 32) for y in range(-8, 62, 24)]  # overlapping window rows
    regions += [(40, 20, 20, 32), (-8, 0, 30, 20), (10, -8, 32, 78)]
    with raster.open_raster(path) as ds:
        reader = raster.RegionReader(ds, (1, 2, 3), None, "tiled.tif")
        for x, y, w, h in regions:
            rgb, valid = reader.read(x, y, w, h)
            rows, cols = slice(y + 8, y + 8 + h), slice(x + 8, x + 8 + w)
            np.testing.assert_array_equal(rgb, padded[:, rows, cols])
            np.testing.assert_array_equal(valid, ~nodata[rows, cols])


def test_region_reader_honours_nodata_alpha_and_masks(tmp_path):
    data = noise_rgb(16, 16)
    data[:, :, :4] = 0  # first four columns
    with_nodata = write_geotiff(tmp_path / "nd.tif", data, nodata=0)
    rgba = np.concatenate([noise_rgb(16, 16), np.full((1, 16, 16), 255, np.uint8)])
    rgba[3, 8:] = 0
    with_alpha = write_geotiff(
        tmp_path / "a.tif", rgba, colorinterp=[CI.red, CI.green, CI.blue, CI.alpha]
    )
    with raster.open_raster(with_nodata) as ds:
        _, valid = raster.RegionReader(ds, (1, 2, 3), None, "nd").read(0, 0, 16, 16)
    assert not valid[:, :4].any() and valid[:, 4:].all()
    with raster.open_raster(with_alpha) as ds:
        _, valid = raster.RegionReader(ds, (1, 2, 3), None, "a").read(0, 0, 16, 16)
    assert valid[:8].all() and not valid[8:].any()


# ---- output --------------------------------------------------------------------------------------
def test_block_row_writer_writes_whole_blocks_and_alpha(tmp_path):
    grid = raster.Grid(40, 600, Affine(1, 0, 0, 0, -1, 0), CRS.from_epsg(32631))
    path = tmp_path / "o.tif"
    rgb = noise_rgb(600, 40)
    valid = np.ones((600, 40), bool)
    valid[100:110] = False
    with raster.create_output(path, grid, alpha=True) as dst:
        writer = raster.BlockRowWriter(dst)
        writes: list[int] = []
        original = dst.write

        def spy(arr, window=None, **kw):
            writes.append(int(window.height))
            return original(arr, window=window, **kw)

        dst.write = spy  # type: ignore[method-assign]
        for y in range(0, 600, 70):
            writer.add(y, rgb[:, y : y + 70], valid[y : y + 70])
        writer.close()
    assert all(h % 256 == 0 for h in writes[:-1]) and sum(writes) == 600
    with rasterio.open(path) as ds:
        assert ds.count == 4 and ds.colorinterp[3] == CI.alpha
        np.testing.assert_array_equal(ds.read([1, 2, 3]), rgb)
        np.testing.assert_array_equal(ds.read(4) > 0, valid)


def test_gtiff_options_user_values_win():
    opts = raster.gtiff_options(alpha=True, creation_options={"compress": "zstd"})
    assert opts["COMPRESS"] == "zstd" and opts["ALPHA"] == "YES" and opts["TILED"] == "YES"


def test_corruption_watch_turns_gdal_warnings_into_input_errors():
    import logging

    gdal = logging.getLogger("rasterio._err")
    with raster.watch_corruption() as watch:
        gdal.warning("CPLE_AppDefined:TIFFReadDirectory:Unknown field with tag 33550 encountered")
        watch.check("x.tif")  # benign tag warnings are not corruption
        gdal.warning("CPLE_AppDefined:JPEGLib:Corrupt JPEG data: premature end of data segment")
        with pytest.raises(InputError, match="Corrupt JPEG data.*truncated or corrupt"):
            watch.check("x.tif")


def test_write_helper_round_trip(tmp_path: Path):
    path = write_geotiff(tmp_path / "x.tif", noise_rgb(3, 5), res=4.0)
    with rasterio.open(path) as ds:
        assert ds.res == (4.0, 4.0) and ds.crs.to_epsg() == 32631
