"""Blend weights and the row-strip accumulator."""

from __future__ import annotations

import numpy as np
import pytest

from geomap_gan.rendering.blend import StripAccumulator, axis_weight_sum, ramp, window_weights
from geomap_gan.rendering.windows import TileGrid


@pytest.mark.parametrize(("tile", "overlap"), [(32, 0), (32, 8), (256, 32), (64, 32)])
def test_ramp_is_positive_and_complementary_in_overlaps(tile, overlap):
    w = ramp(tile, overlap)
    assert w.shape == (tile,) and w.dtype == np.float32
    assert (w > 0).all() and (w <= 1).all()
    stride = tile - overlap
    # the rising edge of one window and the falling edge of its neighbour sum to 1
    np.testing.assert_allclose(w[stride:] + w[: tile - stride], 1.0, atol=2e-3)
    if overlap >= 8:  # the outermost pixels carry (almost) no weight
        assert w[0] == w[-1] < 2e-3
    if stride > overlap:  # 1 between the ramps
        assert w[overlap:stride].min() == 1.0


def test_window_weights_are_separable():
    w = window_weights(16, 4)
    np.testing.assert_allclose(w, np.outer(ramp(16, 4), ramp(16, 4)))


def test_axis_weight_sum_is_one_where_windows_overlap_exactly():
    grid = TileGrid.over(500, 10, 64, 16)
    total = axis_weight_sum(grid.xs, ramp(64, 16), 500)
    assert (total > 0).all()
    inner = slice(grid.xs[0] + 64, grid.xs[-1])  # pixels between first and last window
    np.testing.assert_allclose(total[inner], 1.0, atol=2e-3)


def _render_with(acc: StripAccumulator, grid: TileGrid, image: np.ndarray):
    strips = []
    for w in grid:
        tile = np.zeros((image.shape[0], grid.tile, grid.tile), np.float32)
        valid = np.zeros((grid.tile, grid.tile), bool)
        x0, y0, x1, y1 = w.clipped(grid.width, grid.height)
        tile[:, y0 - w.y : y1 - w.y, x0 - w.x : x1 - w.x] = image[:, y0:y1, x0:x1]
        valid[y0 - w.y : y1 - w.y, x0 - w.x : x1 - w.x] = True
        acc.add(w, tile * acc.weights2d, valid)
        if w.col == grid.shape[1] - 1:
            s = acc.finish_row(w.row)
            if s is not None:
                strips.append(s)
    return strips


@pytest.mark.parametrize(("width", "height", "tile", "overlap"),
                         [(97, 75, 32, 8), (31, 200, 32, 12), (300, 17, 64, 0), (5, 5, 32, 8)])  # fmt: skip
def test_accumulator_reproduces_identity_tiles(width, height, tile, overlap):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, height, width)).astype(np.float32)
    grid = TileGrid.over(width, height, tile, overlap)
    acc = StripAccumulator(grid)
    strips = _render_with(acc, grid, image)
    assert [s.y for s in strips] == sorted(s.y for s in strips) and strips[0].y == 0
    out = np.concatenate([s.rgb for s in strips], axis=1)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, image.astype(np.uint8))
    assert all(s.valid.all() for s in strips)


def test_accumulator_memory_does_not_grow_with_height():
    small = StripAccumulator(TileGrid.over(1000, 500, 64, 16))
    tall = StripAccumulator(TileGrid.over(1000, 50_000, 64, 16))
    assert small._sum.shape == tall._sum.shape == (3, 64, 1000)


def test_invalid_pixels_come_out_zero_and_not_valid():
    grid = TileGrid.over(40, 40, 32, 8)
    acc = StripAccumulator(grid)
    strips = []
    for w in grid:
        valid = np.ones((32, 32), bool)
        valid[:, :4] = False  # the first columns of every window are nodata
        if w.col == 0:
            valid[:] = False
        acc.add(w, np.full((3, 32, 32), 200, np.float32) * acc.weights2d, valid)
        if w.col == grid.shape[1] - 1:
            strips.append(acc.finish_row(w.row))
    rgb = np.concatenate([s.rgb for s in strips], axis=1)
    valid = np.concatenate([s.valid for s in strips], axis=0)
    assert not valid.all() and valid.any()
    assert (rgb[:, ~valid] == 0).all()
    assert (rgb[:, valid] == 200).all()


def test_add_outside_rows_in_flight_is_an_error():
    grid = TileGrid.over(64, 200, 32, 0)
    acc = StripAccumulator(grid)
    last = list(grid)[-1]
    with pytest.raises(ValueError):
        acc.add(last, np.zeros((3, 32, 32), np.float32), None)
