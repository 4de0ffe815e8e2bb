"""Window maths: full coverage with margins, reflection indices, AOI window filtering."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

from geomap_gan.rendering.windows import (
    AoiFilter,
    TileGrid,
    TileWindow,
    axis_offsets,
    reflect_index,
)


@pytest.mark.parametrize("length", [1, 5, 31, 32, 33, 100, 224, 256, 257, 1000, 2049])
@pytest.mark.parametrize(("tile", "overlap"), [(32, 0), (32, 8), (256, 32), (64, 31)])
def test_axis_offsets_cover_every_pixel_with_margin(length, tile, overlap):
    offsets = axis_offsets(length, tile, overlap)
    stride = tile - overlap
    assert all(b - a == stride for a, b in zip(offsets, offsets[1:], strict=False))
    margin = overlap // 2
    assert offsets[0] <= -margin
    assert offsets[-1] + tile >= length + margin
    covered = np.zeros(length, dtype=int)
    for start in offsets:
        covered[max(start, 0) : min(start + tile, length)] += 1
    assert covered.min() >= 1
    # no window lies wholly outside the raster
    assert all(start < length and start + tile > 0 for start in offsets)


def test_axis_offsets_are_centred():
    offsets = axis_offsets(1000, 256, 32)
    left = -offsets[0]
    right = offsets[-1] + 256 - 1000
    assert abs(left - right) <= 1


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (32, 32), (32, -1)])
def test_axis_offsets_reject_bad_settings(tile, overlap):
    with pytest.raises(ValueError):
        axis_offsets(100, tile, overlap)


def test_grid_is_row_major_and_row_end_is_monotonic():
    grid = TileGrid.over(300, 200, 64, 16)
    windows = list(grid)
    assert len(windows) == len(grid) == grid.shape[0] * grid.shape[1]
    assert [(w.row, w.col) for w in windows] == sorted((w.row, w.col) for w in windows)
    ends = [grid.row_end(r) for r in range(grid.shape[0])]
    assert ends == sorted(ends) and ends[-1] == 200
    # rows before row_end(r) are never touched by later window rows
    for r in range(grid.shape[0] - 1):
        assert all(y >= ends[r] for y in grid.ys[r + 1 :])


def test_window_clipped():
    w = TileWindow(-10, 90, 32, 0, 0)
    assert w.clipped(100, 100) == (0, 90, 22, 100)


@pytest.mark.parametrize("length", [1, 2, 3, 7])
def test_reflect_index_matches_numpy_reflect(length):
    data = np.arange(length)
    pad = 20
    expected = np.pad(data, pad, mode="reflect") if length > 1 else np.zeros(length + 2 * pad)
    got = data[reflect_index(np.arange(-pad, length + pad), length)]
    np.testing.assert_array_equal(got, expected)


def test_aoi_filter_keeps_only_windows_overlapping_the_area():
    grid = TileGrid.over(256, 256, 64, 0)
    aoi = AoiFilter(box(70, 70, 120, 120))
    kept = [(w.row, w.col) for w in grid if aoi.touches(w, 256, 256)]
    assert kept == [(1, 1)]
    # touching an edge only is not overlapping
    edge = AoiFilter(box(128, 0, 140, 10))
    assert [(w.row, w.col) for w in grid if edge.touches(w, 256, 256)] == [(0, 2)]
