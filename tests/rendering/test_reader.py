"""reader: 8-bit scaling from scene samples and reflect-padded windowed reads."""

from __future__ import annotations

import numpy as np
import pytest
from geotiffs import noise_rgb, write_geotiff
from rasterio.enums import ColorInterp

from geomap_gan.errors import InputError
from geomap_gan.rendering import reader, scene

CI = ColorInterp


# ---- scaling -------------------------------------------------------------------------------------
def test_percentile_stretch_ignores_nodata_and_nan(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.uniform(1000, 2000, (3, 64, 64)).astype(np.float32)
    data[:, :8] = -9999  # nodata rows
    data[0, 10, 10] = np.nan
    path = write_geotiff(tmp_path / "f.tif", data, nodata=-9999)
    with scene.open_raster(path) as ds:
        s = reader.percentile_stretch(reader.sample_pixels(ds, (1, 2, 3)))
    assert all(1000 <= lo < 1100 for lo in s.low)
    assert all(1900 < hi <= 2000 for hi in s.high)
    out = s.apply(np.array([[[1000.0, 2000.0, np.nan]]] * 3))
    assert out.dtype == np.uint8 and out[0, 0].tolist() == [0, 255, 0]


def test_percentile_stretch_samples_big_scenes_without_reading_all(tmp_path, monkeypatch):
    data = np.tile(np.arange(300, dtype=np.uint16), (3, 300, 1))
    path = write_geotiff(tmp_path / "u16.tif", data, tiled=True, blockxsize=64, blockysize=64)
    monkeypatch.setattr(reader, "STATS_FULL_READ_LIMIT", 1000)
    with scene.open_raster(path) as ds:
        s = reader.percentile_stretch(reader.sample_pixels(ds, (1, 2, 3)))
    assert s.low[0] <= 25 and s.high[0] >= 275  # 2nd and 98th percentiles of 0..299


def test_fixed_stretch_validates():
    assert reader.fixed_stretch((0, 3000)).high == (3000.0,) * 3
    with pytest.raises(InputError, match="MIN < MAX"):
        reader.fixed_stretch((10, 10))


# ---- reading -------------------------------------------------------------------------------------
def test_region_reader_reflects_outside_and_marks_it_invalid(tmp_path):
    data = noise_rgb(20, 30)
    path = write_geotiff(tmp_path / "r.tif", data)
    with scene.open_raster(path) as ds:
        region = reader.RegionReader(ds, (1, 2, 3), None, "r.tif")
        rgb, valid = region.read(-5, -3, 40, 26)
    assert rgb.shape == (3, 26, 40) and valid.shape == (26, 40)
    np.testing.assert_array_equal(rgb[:, 3:23, 5:35], data)
    padded = np.pad(data, ((0, 0), (3, 3), (5, 5)), mode="reflect")
    np.testing.assert_array_equal(rgb, padded)
    assert valid[3:23, 5:35].all() and valid.sum() == 20 * 30


def test_region_reader_mirrors_tiny_rasters_as_often_as_needed(tmp_path):
    data = noise_rgb(6, 5)
    path = write_geotiff(tmp_path / "tiny.tif", data)
    with scene.open_raster(path) as ds:
        rgb, valid = reader.RegionReader(ds, (1, 2, 3), None, "tiny").read(-8, -9, 21, 24)
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
    with scene.open_raster(path) as ds:
        region = reader.RegionReader(ds, (1, 2, 3), None, "tiled.tif")
        for x, y, w, h in regions:
            rgb, valid = region.read(x, y, w, h)
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
    with scene.open_raster(with_nodata) as ds:
        _, valid = reader.RegionReader(ds, (1, 2, 3), None, "nd").read(0, 0, 16, 16)
    assert not valid[:, :4].any() and valid[:, 4:].all()
    with scene.open_raster(with_alpha) as ds:
        _, valid = reader.RegionReader(ds, (1, 2, 3), None, "a").read(0, 0, 16, 16)
    assert valid[:8].all() and not valid[8:].any()


def _sparse_scene(path, side: int, valid: tuple[int, int, int]) -> object:
    """A uint8 scene of ``side``^2 px, nodata 0 but for a square of ``valid[2]`` px at
    (``valid[0]``, ``valid[1]``), tiled, DEFLATE, no overviews."""
    import rasterio
    from affine import Affine

    x, y, n = valid
    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8", nodata=0,
                   crs="EPSG:32631", transform=Affine(1, 0, 500_000, 0, -1, 5_000_000),
                   tiled=True, blockxsize=256, blockysize=256, compress="DEFLATE")  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        block = np.random.default_rng(0).integers(1, 256, (3, n, n), dtype=np.uint8)
        ds.write(block, window=rasterio.windows.Window(x, y, n, n))
    return path


def test_a_sparse_scene_is_sampled_where_its_data_is(tmp_path, monkeypatch):
    """Issue 39: the 8 x 8 sample windows of a big scene without overviews can all miss a small
    valid area; the whole extent is then read decimated, so the scene is not 'all nodata'."""
    monkeypatch.setattr(reader, "STATS_FULL_READ_LIMIT", 1000)  # sample it as a big scene
    path = _sparse_scene(tmp_path / "sparse.tif", 2000, (140, 140, 120))  # between windows
    with scene.open_raster(path) as ds:
        windows = reader._stats_windows(ds.width, ds.height)
        assert not any(
            w.col_off < 260 and w.col_off + w.width > 140 and w.row_off < 260 and w.row_off + w.height > 140
            for w in windows
        )  # fmt: skip  # the windows miss it
        values = reader.sample_pixels(ds, (1, 2, 3))
    assert values.shape[0] == 3 and values.shape[1] > 1000 and (values > 0).all()


@pytest.mark.slow
def test_a_12000_px_scene_with_1p4_percent_data_is_rendered_not_refused(tmp_path):
    """The probe's case at full size: 12000^2 px, 1.4 % valid (a 1420 px square), no overviews."""
    path = _sparse_scene(tmp_path / "sparse.tif", 12000, (5300, 7100, 1420))
    with scene.open_raster(path) as ds:
        values = reader.sample_pixels(ds, (1, 2, 3))
    assert values.shape[1] > 10_000
