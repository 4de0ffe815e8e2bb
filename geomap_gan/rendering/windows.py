"""Window maths for tiled rendering: pure numbers and shapely, no I/O.

A render grid of ``width`` x ``height`` pixels is covered by square windows of ``tile`` pixels that
overlap their neighbours by ``overlap`` pixels (stride ``tile - overlap``). The grid of windows is
centred on the raster and reaches at least ``overlap // 2`` pixels beyond every edge, so that no
raster pixel sits on the outer border of a window (where a U-Net sees zero padding); the parts of
windows outside the raster are filled by reflection when read and never written. Offsets may be
negative. All units are pixels of the render grid; rows and columns are 0-based.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from shapely import prepared
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

if TYPE_CHECKING:
    from affine import Affine


@dataclass(frozen=True)
class TileWindow:
    """One window: top-left corner (may be negative) and its place in the grid."""

    x: int
    y: int
    size: int
    row: int  # index of the window row (0-based)
    col: int  # index within the row (0-based)

    def clipped(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The part inside a ``width`` x ``height`` raster as (x0, y0, x1, y1), end exclusive."""
        return (
            max(self.x, 0),
            max(self.y, 0),
            min(self.x + self.size, width),
            min(self.y + self.size, height),
        )


def axis_offsets(length: int, tile: int, overlap: int) -> list[int]:
    """Window start offsets along one axis of ``length`` pixels, centred, stride tile - overlap.

    The windows span at least ``length + 2 * (overlap // 2)`` pixels, so every pixel of the axis
    is covered and the outermost pixels are ``overlap // 2`` or more from a window's outer border.
    """
    if length < 1:
        raise ValueError(f"axis length must be positive, got {length}")
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got {tile}, {overlap}")
    stride = tile - overlap
    needed = length + 2 * (overlap // 2)
    count = max(1, math.ceil((needed - overlap) / stride))
    span = count * stride + overlap
    start = -((span - length) // 2)
    return [start + k * stride for k in range(count)]


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``n``."""
    return -(-n // multiple) * multiple


def _first_start(margin: int, phase: int, multiple: int) -> int:
    """The largest window start <= -margin that is congruent to ``phase`` modulo ``multiple``:
    the first window's core then begins at or before pixel 0."""
    return -margin - ((-margin - phase) % multiple)


def core_offsets(length: int, window: int, margin: int, phase: int, multiple: int) -> list[int]:
    """Window start offsets along one axis for a network with a bounded receptive field.

    Each window keeps only its core, ``[start + margin, start + window - margin)``; the cores
    tile the axis without gaps or overlap, and every start is congruent to ``phase`` modulo
    ``multiple`` (the network's total stride), so that a pixel's output depends on the content
    around it and on its position in the CRS lattice, never on which window it fell in.
    ``margin`` and ``window`` must be multiples of ``multiple``.
    """
    if length < 1:
        raise ValueError(f"axis length must be positive, got {length}")
    if margin % multiple or window % multiple or window <= 2 * margin:
        raise ValueError(
            f"need window and margin multiples of {multiple} and window > 2 x margin, "
            f"got {window}, {margin}"
        )
    first = _first_start(margin, phase, multiple)
    stride = window - 2 * margin
    count = max(1, math.ceil((length - (first + margin)) / stride))
    return [first + k * stride for k in range(count)]


def fitting_window(length: int, margin: int, phase: int, multiple: int) -> int:
    """The smallest window (a multiple of ``multiple``) whose core covers ``length`` pixels in
    one piece: small scenes get one window that fits them instead of a large padded one."""
    return round_up(length + margin - _first_start(margin, phase, multiple), multiple)


@dataclass(frozen=True)
class TileGrid:
    """All windows over a raster, in row-major order.

    Blended grids (``margin`` 0) weight each window with a raised-cosine ramp over ``overlap``
    pixels; core grids (``margin`` > 0) weight a window 1 on its core and 0 on its margins, so
    each pixel comes from exactly one window, bit for bit.
    """

    width: int
    height: int
    tile: int
    overlap: int
    xs: tuple[int, ...]
    ys: tuple[int, ...]
    margin: int = 0

    @classmethod
    def over(cls, width: int, height: int, tile: int, overlap: int) -> TileGrid:
        """The grid covering a ``width`` x ``height`` raster (pixels)."""
        return cls(
            width,
            height,
            tile,
            overlap,
            tuple(axis_offsets(width, tile, overlap)),
            tuple(axis_offsets(height, tile, overlap)),
        )

    @classmethod
    def cores(
        cls,
        width: int,
        height: int,
        window: int,
        margin: int,
        phase: tuple[int, int] = (0, 0),
        multiple: int = 1,
    ) -> TileGrid:
        """The core grid (see :func:`core_offsets`) over a ``width`` x ``height`` raster, with
        ``phase`` (x, y) the window start offsets modulo ``multiple``."""
        xs = core_offsets(width, window, margin, phase[0], multiple)
        ys = core_offsets(height, window, margin, phase[1], multiple)
        return cls(width, height, window, 0, tuple(xs), tuple(ys), margin)

    @property
    def shape(self) -> tuple[int, int]:
        """(window rows, window columns)."""
        return len(self.ys), len(self.xs)

    def __len__(self) -> int:
        return len(self.xs) * len(self.ys)

    def __iter__(self) -> Iterator[TileWindow]:
        for r, y in enumerate(self.ys):
            for c, x in enumerate(self.xs):
                yield TileWindow(x, y, self.tile, r, c)

    def row_end(self, row: int) -> int:
        """First raster row that windows of grid rows after ``row`` still touch (rows before it
        are final once grid row ``row`` has been accumulated); ``height`` for the last row."""
        if row + 1 >= len(self.ys):
            return self.height
        return min(max(self.ys[row + 1], 0), self.height)


class AoiFilter:
    """Which windows an area of interest touches, with the AOI in render-grid pixel coordinates
    (x to the right, y down, pixel (c, r) covering [c, c+1) x [r, r+1))."""

    def __init__(self, geometry_px: BaseGeometry) -> None:
        self.geometry = geometry_px
        self._prepared = prepared.prep(geometry_px)

    def touches(self, window: TileWindow, width: int, height: int) -> bool:
        """Whether the in-raster part of ``window`` overlaps the AOI's interior."""
        x0, y0, x1, y1 = window.clipped(width, height)
        if x1 <= x0 or y1 <= y0:
            return False
        cell = box(x0, y0, x1, y1)
        return bool(self._prepared.intersects(cell)) and not self._prepared.touches(cell)


def reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    """Map indices outside ``[0, length)`` into it by mirror reflection about the edge pixels
    (numpy's ``reflect`` mode, repeated for any distance): -1 -> 1, length -> length - 2."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.mod(index, period)
    return np.where(folded >= length, period - folded, folded)


def touching(offsets: tuple[int, ...], size: int, start: int, stop: int, margin: int = 0) -> range:
    """Indexes of the windows (starting at ``offsets``) whose span without ``margin`` px at
    each end touches ``[start, stop)``."""
    touching = [k for k, o in enumerate(offsets) if o + margin < stop and o + size - margin > start]
    return range(touching[0], touching[-1] + 1)


def panel_columns(tiles: TileGrid, start: int, stop: int) -> range:
    """Grid columns whose windows give raster columns ``[start, stop)`` a value: on a core grid
    only those whose core touches them (a margin has weight 0), so a column panel runs the one
    window whose core straddles its edge a second time, not also the neighbours whose margins
    reach across it (a fifth of all windows, with 1024 px windows and 4096 px panels)."""
    return touching(tiles.xs, tiles.tile, start, stop, tiles.margin)


def window_rows(tiles: TileGrid, start: int, stop: int) -> range:
    """Grid rows (0-based) whose windows touch raster rows ``[start, stop)``."""
    return touching(tiles.ys, tiles.tile, start, stop)


def column_panels(width: int, panel: int, block: int) -> list[tuple[int, int]]:
    """Raster columns split into panels of about ``panel`` pixels starting on multiples of
    ``block`` (whole output blocks per write); one panel when ``panel`` is 0 or covers all."""
    if panel <= 0 or width <= panel:
        return [(0, width)]
    step = max(block, panel // block * block)
    return [(c, min(c + step, width)) for c in range(0, width, step)]


def lattice_phase(transform: Affine, multiple: int) -> tuple[int, int]:
    """Window start offsets (x, y) modulo ``multiple`` that put windows on the CRS lattice of
    the render grid's pixel size: column ``-c/a`` and row ``-f/e`` of the grid's origin counted
    from the CRS origin. Two scenes on the same lattice then share the network's stride phase
    and agree exactly where they overlap, wherever each one starts."""
    col = round(transform.c / transform.a) if transform.a else 0
    row = round(transform.f / transform.e) if transform.e else 0
    return (-col) % multiple, (-row) % multiple
