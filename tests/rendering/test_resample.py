"""Resampled reads of the render grid (resample.ResampledView): any window reads the same pixels
as one read of the whole grid, and they match GDAL's warper (the previous path) within a grey
level where the kernels agree; rotated rasters still go through the warper."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from geotiffs import UTM31, write_geotiff
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geomap_gan.rendering.grid import model_grid
from geomap_gan.rendering.resample import MAX_SHRINK, ROWS_PER_TASK, ResampledView, render_source


def _smooth_scene(path, size: int = 300, res: float = 0.5, nodata=None, seed: int = 0):
    """Band-limited imagery (random noise, blurred): aerial-like, so kernels can agree."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(3, size // 4 + 2, size // 4 + 2))
    up = np.kron(noise, np.ones((4, 4)))[:, :size, :size]
    img = np.clip(128 + 50 * up, 1, 255).astype(np.uint8)
    return write_geotiff(path, img, res=res, nodata=nodata)


@pytest.mark.parametrize("gsd", [1.0, 1.187, 0.35])  # shrink 2x, shrink 2.37x, enlarge 1.43x
def test_windows_read_the_same_pixels_as_the_whole_grid(tmp_path, gsd):
    path = _smooth_scene(tmp_path / "s.tif")
    with rasterio.open(path) as ds:
        grid, _ = model_grid(ds, gsd, max_upscale=4)
        view = ResampledView(ds, grid)
        whole = view.read([1, 2, 3], Window(0, 0, grid.width, grid.height))
        rng = np.random.default_rng(1)
        for _ in range(20):  # windows of all sizes, many touching an edge
            x, y = (int(v) for v in rng.integers(0, [grid.width - 1, grid.height - 1]))
            w = int(rng.integers(1, grid.width - x + 1))
            h = int(rng.integers(1, grid.height - y + 1))
            part = view.read([1, 2, 3], Window(x, y, w, h))
            np.testing.assert_array_equal(part, whole[:, y : y + h, x : x + w])


def test_averaging_in_threads_reads_the_same_pixels(tmp_path):
    """The engine's I/O threads share the averaging of a shrinking read by bands of rows."""
    path = _smooth_scene(tmp_path / "s.tif", size=700, nodata=0)
    with rasterio.open(path) as ds:
        grid, _ = model_grid(ds, 1.187, max_upscale=4)
        assert grid.height > 2 * ROWS_PER_TASK  # several bands, so the pool is used
        whole = Window(0, 0, grid.width, grid.height)
        one = ResampledView(ds, grid).read([1, 2, 3], whole)
        with ResampledView(ds, grid, threads=3) as view:
            np.testing.assert_array_equal(view.read([1, 2, 3], whole), one)
            part = view.read([1, 2, 3], Window(5, 7, 200, 250))
        np.testing.assert_array_equal(part, one[:, 7:257, 5:205])


@pytest.mark.parametrize(("gsd", "tol"), [(1.0, 1), (1.187, 1), (0.35, 2)])
def test_matches_the_warper_away_from_the_edges(tmp_path, gsd, tol):
    path = _smooth_scene(tmp_path / "s.tif")
    with rasterio.open(path) as ds:
        grid, _ = model_grid(ds, gsd, max_upscale=4)
        ours = ResampledView(ds, grid).read([1, 2, 3], Window(0, 0, grid.width, grid.height))
        shrink = gsd > 0.5
        resampling = (
            rasterio.enums.Resampling.average if shrink else rasterio.enums.Resampling.cubic
        )
        with WarpedVRT(ds, crs=ds.crs, transform=grid.transform, width=grid.width,
                       height=grid.height, resampling=resampling) as vrt:  # fmt: skip
            warped = vrt.read([1, 2, 3])
    inner = (slice(None), slice(4, -4), slice(4, -4))
    diff = np.abs(ours.astype(int) - warped.astype(int))[inner]
    assert np.mean(diff <= tol) > 0.999, (diff.mean(), diff.max())


def test_render_reads_by_resampling_only_where_that_is_faster(tmp_path):
    """Enlarging (1.3x the warper) and shrinking up to MAX_SHRINK on integer samples
    (benchmarks/render_io.py): resampled; further shrinking and float samples: the warper."""
    path = _smooth_scene(tmp_path / "s.tif")
    with rasterio.open(path) as ds:
        for gsd in (0.35, 1.0, 0.5 * MAX_SHRINK):
            grid, _ = model_grid(ds, gsd, max_upscale=4)
            assert isinstance(render_source(ds, grid), ResampledView), gsd
        further, _ = model_grid(ds, 0.5 * MAX_SHRINK * 1.25, max_upscale=4)
        with render_source(ds, further) as source:
            assert isinstance(source, WarpedVRT)
    floats = write_geotiff(tmp_path / "f.tif", np.full((3, 64, 64), 0.5, np.float32), res=0.5)
    with rasterio.open(floats) as ds:
        grid, _ = model_grid(ds, 1.0, max_upscale=4)
        with render_source(ds, grid) as source:
            assert isinstance(source, WarpedVRT)


@pytest.mark.parametrize("gsd", [1.0, 1.187])
def test_shrinking_averages_only_valid_pixels_like_the_warper(tmp_path, gsd):
    """Next to a nodata collar a grid pixel averages the valid source pixels only (GDAL's
    warper skips nodata too), so the edge of the valid area is not darkened by the fill value."""
    path = _smooth_scene(tmp_path / "s.tif", nodata=0)
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[:, :, :101] = 0  # a collar whose edge falls inside grid pixels
        ds.write(data)
    with rasterio.open(path) as ds:
        grid, _ = model_grid(ds, gsd, max_upscale=4)
        whole = Window(0, 0, grid.width, grid.height)
        view = ResampledView(ds, grid)
        ours, valid = view.read([1, 2, 3], whole), view.read_masks([1, 2, 3], whole)[0] > 0
        with WarpedVRT(ds, crs=ds.crs, transform=grid.transform, width=grid.width,
                       height=grid.height, resampling=rasterio.enums.Resampling.average) as vrt:  # fmt: skip
            warped = vrt.read([1, 2, 3])
    edge = int(np.argmax(valid.any(axis=0)))  # first valid column, partly over the collar
    inner = (slice(None), slice(4, -4), slice(edge, edge + 3))
    diff = np.abs(ours.astype(int) - warped.astype(int))[inner]
    assert ours[inner].min() > 0 and diff.max() <= 1, (diff.max(), ours[inner].min())


def test_nodata_is_masked_like_the_source(tmp_path):
    path = _smooth_scene(tmp_path / "s.tif", nodata=0)
    with rasterio.open(path, "r+") as ds:
        data = ds.read()
        data[:, :, :100] = 0  # a nodata collar on the left third
        ds.write(data)
    with rasterio.open(path) as ds:
        grid, _ = model_grid(ds, 1.0, max_upscale=4)
        view = ResampledView(ds, grid)
        masks = view.read_masks([1, 2, 3], Window(0, 0, grid.width, grid.height))
    valid = (masks > 0).any(axis=0)
    assert not valid[:, :49].any() and valid[:, 51:].all()  # the collar ends at x = 100 * 0.5 m


def test_a_rotated_raster_goes_through_the_warper(tmp_path):
    rotated = Affine(0.5, 0.1, 500000, 0.1, -0.5, 4000000)
    img = np.full((3, 64, 64), 100, np.uint8)
    path = write_geotiff(tmp_path / "r.tif", img, crs=UTM31, transform=rotated)
    with rasterio.open(path) as ds:
        grid, _ = model_grid(ds, 1.0, max_upscale=4)
        with render_source(ds, grid) as source:
            assert isinstance(source, WarpedVRT)
