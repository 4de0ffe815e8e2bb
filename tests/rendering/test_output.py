"""output: block-row writing, GTiff options, the output helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from geotiffs import noise_rgb, write_geotiff
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from geomap_gan.rendering import output
from geomap_gan.rendering.grid import Grid

CI = ColorInterp


# ---- output --------------------------------------------------------------------------------------
def test_block_row_writer_writes_whole_blocks_and_alpha(tmp_path):
    grid = Grid(40, 600, Affine(1, 0, 0, 0, -1, 0), CRS.from_epsg(32631))
    path = tmp_path / "o.tif"
    rgb = noise_rgb(600, 40)
    valid = np.ones((600, 40), bool)
    valid[100:110] = False
    with output.create_output(path, grid, alpha=True) as dst:
        writer = output.BlockRowWriter(dst)
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
    opts = output.gtiff_options(alpha=True, creation_options={"compress": "zstd"})
    assert opts["COMPRESS"] == "zstd" and opts["ALPHA"] == "YES" and opts["TILED"] == "YES"


def test_write_helper_round_trip(tmp_path: Path):
    path = write_geotiff(tmp_path / "x.tif", noise_rgb(3, 5), res=4.0)
    with rasterio.open(path) as ds:
        assert ds.res == (4.0, 4.0) and ds.crs.to_epsg() == 32631
