"""The render grid of a north-up scene in its own CRS, read from the scene's own pixels.

Why: when only the pixel size changes, a WarpedVRT runs GDAL's general warper, which transforms
coordinates per pixel. When the grid is finer than the scene (enlarging, the case of 2-5 m
imagery for a ~1.9 m model), GDAL's resampled RasterIO (a floating-point source window read into
a larger buffer, cubic kernel) gives the same pixels with less work: with a pass-through
generator on a 3072^2 scene at 1.5x the model's GSD, 9.2-9.7 MP/s of map against the warper's
7.2-7.7, with 30% less CPU (measured side by side). When the grid is coarser (shrinking, the
usual case: 0.3-1 m orthophotos), GDAL's resampled reads were slower than the warper, so the
scene's pixels are read as they are and area-averaged here, in numpy, one axis at a time
(``_Axis.taps``): the kernel of GDAL's "average", at a fraction of the warper's CPU (see
benchmarks/render_io.py). Reads of any window of the grid give the same pixels as one read of
the whole grid (each grid pixel is one fixed weighted sum, whichever window asks), so the map
still does not depend on the window grid.

Grid pixels that straddle the raster's edge (the grid snaps to the CRS lattice, so up to half a
pixel sticks out) are read from the part inside the raster, always with the same clamped source
window, so they too are the same whichever window asks for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geomap_gan.rendering.grid import Grid
from geomap_gan.rendering.scene import alpha_band, has_nodata_mask

# Shrinking further than this reads source windows of over 16x the grid window's pixels at once;
# the warper, which reads in chunks of its own, keeps those (0.1 m drone imagery, say).
MAX_SHRINK = 4.0
# Output rows per task when a view averages in several threads (a few MB of float32 each).
ROWS_PER_TASK = 64


def can_resample_by_reads(ds: DatasetReader, grid: Grid) -> bool:
    """Whether ``grid`` is ``ds`` with other pixel sizes in its own CRS (north-up, no rotation),
    enlarged on both axes or shrunk on both by at most MAX_SHRINK, integer samples when shrunk
    (the averages are rounded back to the samples' integer type; float scenes keep the warper).
    Anything else goes through the warper."""
    a, b = ds.transform, grid.transform
    same_crs = ds.crs == grid.crs
    north_up = a.b == a.d == 0 and b.b == b.d == 0 and a.a * b.a > 0 and a.e * b.e > 0
    if not (same_crs and north_up):
        return False
    fx, fy = b.a / a.a, b.e / a.e
    if fx < 1 and fy < 1:
        return True
    integer = all(np.dtype(t).kind in "iu" for t in ds.dtypes)
    return integer and 1 < fx <= MAX_SHRINK and 1 < fy <= MAX_SHRINK


class _Axis:
    """One axis of the mapping: grid index i covers source coordinates [off + i*f, off + (i+1)*f)."""

    def __init__(self, offset: float, factor: float, size: int) -> None:
        self.off, self.f, self.n = offset, factor, size
        # grid indices whose source interval lies wholly inside [0, size)
        self.first = max(0, math.ceil(-offset / factor - 1e-9))
        self.stop = math.floor((size - offset) / factor + 1e-9)

    def nearest(self, start: int, stop: int) -> np.ndarray:
        """Source index of each grid index in [start, stop): the one under its centre, clamped
        to the raster (the same for a pixel whichever window asks)."""
        centres = self.off + (np.arange(start, stop) + 0.5) * self.f
        return np.clip(np.floor(centres).astype(np.int64), 0, self.n - 1)

    def taps(self, start: int, stop: int) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Area-average weights of grid indices [start, stop): (first source index, source
        count, (n, K) source indexes from the first, (n, K) weights summing to 1 per row).

        Grid pixel i averages the source pixels under [off + i*f, off + (i+1)*f), clamped to
        the raster, each weighted by how much of it lies inside. K = ceil(f) + 1 for every
        call, and unused taps weigh 0, so a pixel's sum is the same whichever window asks.
        """
        i = np.arange(start, stop, dtype=np.float64)
        lo = np.clip(self.off + i * self.f, 0.0, self.n)
        hi = np.clip(self.off + (i + 1) * self.f, 0.0, self.n)
        k0 = np.minimum(np.floor(lo).astype(np.int64), self.n - 1)
        k = k0[:, None] + np.arange(math.ceil(self.f) + 1)[None, :]
        overlap = np.minimum(hi[:, None], k + 1) - np.maximum(lo[:, None], k)
        weights = np.clip(overlap, 0.0, None) / np.maximum(hi - lo, 1e-12)[:, None]
        k = np.minimum(k, self.n - 1)
        first, last = int(k.min()), int(k.max())
        return first, last - first + 1, k - first, weights.astype(np.float32)

    def pieces(self, start: int, stop: int) -> list[tuple[int, int, float, float]]:
        """Sub-ranges [a, b) of grid indices [start, stop), each with the source interval it
        reads (clamped to the raster): the inside run, and the edge pixels one by one."""
        out = []
        inner = (max(start, self.first), min(stop, self.stop))
        edges = [i for i in range(start, min(stop, self.first))]
        edges += [i for i in range(max(start, self.stop, inner[0]), stop)]
        if inner[0] < inner[1]:
            out.append((*inner, self.off + inner[0] * self.f, self.off + inner[1] * self.f))
        for i in edges:
            lo = min(max(self.off + i * self.f, 0.0), self.n)
            hi = min(max(self.off + (i + 1) * self.f, 0.0), self.n)
            if hi - lo > 1e-6:
                out.append((i, i + 1, lo, hi))
        return sorted(out)


def _area(
    a: np.ndarray,
    iy: np.ndarray,
    wy: np.ndarray,
    ix: np.ndarray,
    wx: np.ndarray,
    pool: ThreadPoolExecutor | None = None,
) -> np.ndarray:
    """(bands, rows, cols) source pixels -> (bands, n_rows, n_cols) float32 weighted sums, rows
    first: out[:, i, j] = sum_s sum_t wy[i, s] * wx[j, t] * a[:, iy[i, s], ix[j, t]], taps in
    order. Trailing taps that weigh 0 for every pixel asked are skipped (adding 0 changes no
    sum), and the gathers write into preallocated buffers: 2-3x fewer passes over memory than
    plain fancy indexing. With a ``pool``, bands of output rows are summed in its threads (numpy
    releases the GIL): each row's sums are the same whichever band it falls in."""
    if pool is None or len(iy) < 2 * ROWS_PER_TASK:
        return _weighted_taps(_weighted_taps(a, iy, wy, axis=1), ix, wx, axis=2)
    bands = [slice(r, r + ROWS_PER_TASK) for r in range(0, len(iy), ROWS_PER_TASK)]
    parts = pool.map(lambda b: _area(a, iy[b], wy[b], ix, wx), bands)
    return np.concatenate(list(parts), axis=1)


def _weighted_taps(a: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """sum over taps t of w[:, t] * a taken at idx[:, t] along ``axis`` (1 or 2), in float32;
    ``a`` may hold integers: each tap is gathered in its own type and converted by the multiply
    (no float copy of the whole source read)."""
    used = int(np.flatnonzero((w > 0).any(axis=0)).max()) + 1
    shape = list(a.shape)
    shape[axis] = len(idx)
    out, part = np.empty(shape, np.float32), np.empty(shape, np.float32)
    taken = np.empty(shape, a.dtype)
    weight = (lambda t: w[None, :, t, None]) if axis == 1 else (lambda t: w[None, None, :, t])
    for t in range(used):
        np.take(a, idx[:, t], axis=axis, out=taken)
        np.multiply(taken, weight(t), out=out if t == 0 else part)
        if t:
            out += part
    return out


class ResampledView:
    """Reads like a dataset on ``grid`` (the subset of DatasetReader's interface the reader uses:
    ``read``, ``read_masks``, size, dtypes, blocks, colour interpretation, masks)."""

    BLOCK = 512  # grid pixels per block, for the reader's block-aligned row cache

    def __init__(self, ds: DatasetReader, grid: Grid, threads: int = 1) -> None:
        """``threads``: how many threads average a read when shrinking (the engine's I/O
        threads, as GDAL's NUM_THREADS), so the resampled path scales with cores as GDAL's
        decoding and compression do."""
        self.ds = ds
        self.name = ds.name
        self.width, self.height = grid.width, grid.height
        self.transform, self.crs = grid.transform, grid.crs
        self.count, self.dtypes, self.nodata = ds.count, ds.dtypes, ds.nodata
        self.colorinterp, self.mask_flag_enums = ds.colorinterp, ds.mask_flag_enums
        self.block_shapes = [(self.BLOCK, self.BLOCK)] * ds.count
        s, g = ds.transform, grid.transform
        fx, fy = g.a / s.a, g.e / s.e
        self.shrink = fx > 1  # can_resample_by_reads: both axes shrink, or both enlarge
        self.weigh_validity = has_nodata_mask(ds)
        self._pool = ThreadPoolExecutor(threads) if self.shrink and threads > 1 else None
        self._x = _Axis((g.c - s.c) / s.a, fx, ds.width)
        self._y = _Axis((g.f - s.f) / s.e, fy, ds.height)

    def __enter__(self) -> ResampledView:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def read(self, indexes: Sequence[int], window: Window) -> np.ndarray:
        if self.shrink:
            return self._average(indexes, window)
        return self._assemble(indexes, window, self.ds.read, Resampling.cubic, self.dtypes[0])

    def _average(self, indexes: Sequence[int], window: Window) -> np.ndarray:
        """Grid ``window`` as area averages of one read of the source pixels under it; with a
        mask, of the valid ones only (as GDAL's warper skips nodata), 0 where none is valid."""
        x0, y0 = int(window.col_off), int(window.row_off)
        sy, ny, iy, wy = self._y.taps(y0, y0 + int(window.height))
        sx, nx, ix, wx = self._x.taps(x0, x0 + int(window.width))
        src = Window(sx, sy, nx, ny)
        values = self.ds.read(list(indexes), window=src)
        if self.weigh_validity:
            valid = self.ds.read_masks(list(indexes), window=src) > 0
            total = _area(valid.view(np.uint8), iy, wy, ix, wx, self._pool)
            values = np.where(valid, values, 0).astype(values.dtype, copy=False)
            out = _area(values, iy, wy, ix, wx, self._pool) / np.maximum(total, 1e-6)
        else:
            out = _area(values, iy, wy, ix, wx, self._pool)
        info = np.iinfo(self.dtypes[0])
        np.rint(out, out=out)
        return np.clip(out, info.min, info.max, out=out).astype(self.dtypes[0])

    def read_masks(self, indexes: Sequence[int], window: Window) -> np.ndarray:
        """Validity (0 or 255) per band, nearest neighbour, picked here from one read of the
        source masks at their own resolution. Why not GDAL's nearest resampled read: under the
        engine's small block cache it decoded the source blocks again for every output row
        (18 s for a 2473x1200 window of the NAIP scene; this way 0.01 s)."""
        x0, y0 = int(window.col_off), int(window.row_off)
        cols = self._x.nearest(x0, x0 + int(window.width))
        rows = self._y.nearest(y0, y0 + int(window.height))
        c0, r0 = int(cols.min()), int(rows.min())
        src = Window(c0, r0, int(cols.max()) - c0 + 1, int(rows.max()) - r0 + 1)
        native = self.ds.read_masks(list(indexes), window=src)
        return native[:, rows - r0][:, :, cols - c0]

    def _assemble(
        self, indexes: Sequence[int], window: Window, read: Any, resampling: Resampling, dtype: Any
    ) -> np.ndarray:
        """Grid ``window`` from one resampled read per piece (one for windows off the edges);
        pixels with no source at all are 0 (and masked: the mask is 0 there too)."""
        x0, y0 = int(window.col_off), int(window.row_off)
        w, h = int(window.width), int(window.height)
        out = np.zeros((len(indexes), h, w), dtype=dtype)
        for ya, yb, sy0, sy1 in self._y.pieces(y0, y0 + h):
            for xa, xb, sx0, sx1 in self._x.pieces(x0, x0 + w):
                src = Window(sx0, sy0, sx1 - sx0, sy1 - sy0)
                shape = (len(indexes), yb - ya, xb - xa)
                out[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = read(
                    list(indexes), window=src, out_shape=shape, resampling=resampling
                )
        return out


def render_source(
    ds: DatasetReader, grid: Grid, threads: int = 1
) -> DatasetReader | WarpedVRT | ResampledView:
    """The dataset to read the render grid from: ``ds`` itself; when only the pixel size
    changes in ``ds``'s own CRS, resampled reads (``resample.ResampledView``: cubic enlarging,
    area average shrinking, faster than the warper for both); else a WarpedVRT (area average
    when shrinking, cubic when enlarging). Nodata, alpha and masks carry over. ``threads``: the
    resampled reads' own threads (the warper uses GDAL_NUM_THREADS)."""
    if grid.transform == ds.transform and (grid.width, grid.height) == (ds.width, ds.height):
        return ds
    if can_resample_by_reads(ds, grid):
        return ResampledView(ds, grid, threads)
    shrink = abs(grid.transform.a) > abs(ds.transform.a)
    # Validity travels as an alpha band warped together with the data: reading a warped mask
    # separately (read_masks) runs the whole warp a second time (measured 5x slower on NAIP).
    add_alpha = has_nodata_mask(ds) and alpha_band(ds) is None
    return WarpedVRT(
        ds,
        crs=ds.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=Resampling.average if shrink else Resampling.cubic,
        add_alpha=add_alpha,
    )
