"""Read a map raster a strip of rows at a time into exclusive class masks.

A map is any 3-band 8-bit raster drawn in the legend's colours (ours, or another drawn with the
same palette), or 4 bands whose 4th is alpha. Masked pixels (nodata, alpha 0, a GDAL mask band)
belong to no class. The masks are made exclusive by the legend's drawing order (a later class
wins), so polygons of two classes never overlap and a road through a park cuts the park.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from geomap_gan.errors import InputError
from geomap_gan.legend import CLASS_RULES, DRAW_ORDER, class_masks
from geomap_gan.vector.options import MAP_GSD

BLOCK_ROWS = 64
"""Rows classified at a time by the legend's rules (small maps)."""
READ_ROWS = 1024
"""The most rows read at a time (a block row of the file, where its blocks are this tall)."""


@dataclass(frozen=True)
class MapInfo:
    """A map raster's grid and its ground scale.

    ``scale``: ground metres per CRS unit along x and y (for areas and lengths in metres).
    ``pixel_m``: ground metres of one pixel along a row (x) and down a column (y).
    """

    width: int
    height: int
    transform: Affine
    crs: CRS | None
    has_alpha: bool
    scale: tuple[float, float]
    pixel_m: tuple[float, float]

    @property
    def pixel_area_m2(self) -> float:
        """Ground area of one pixel (exact for north-up grids)."""
        t = self.transform
        return abs(t.a * t.e - t.b * t.d) * self.scale[0] * self.scale[1]


def _ground_scale(crs: CRS, transform: Affine, width: int, height: int) -> tuple[float, float]:
    """Metres per CRS unit, from the render path's one home of that rule (it moved to
    ``geomap_gan.rendering.grid``; older trees have it in ``geomap_gan.scene``)."""
    try:
        from geomap_gan.rendering.grid import ground_scale
    except ImportError:  # pragma: no cover - the flat layout before the restructuring
        from geomap_gan.scene import ground_scale  # type: ignore[no-redef]
    return ground_scale(crs, transform, width, height)


def _check_bands(ds: DatasetReader, name: str) -> bool:
    """Whether the map has an alpha band; InputError unless it is 3 (or 4) 8-bit bands."""
    if ds.count not in (3, 4) or any(dt != "uint8" for dt in ds.dtypes):
        kinds = ", ".join(sorted(set(ds.dtypes)))
        raise InputError(
            f"{name} has {ds.count} band(s) of {kinds}; a map raster is 3-band "
            "(or RGBA) 8-bit RGB drawn in the legend's colours: convert it first "
            "(gdal_translate -ot Byte -b 1 -b 2 -b 3)"
        )
    return ds.count == 4


def _map_info(ds: DatasetReader, name: str, allow_ungeoreferenced: bool) -> MapInfo:
    """Validate ``ds`` as a map raster and measure its ground scale."""
    has_alpha = _check_bands(ds, name)
    t = ds.transform
    if ds.crs is None:
        if not allow_ungeoreferenced:
            raise InputError(
                f"{name} has no CRS, so its layers could not be placed on a map; "
                "assign one (gdal_edit.py -a_srs EPSG:...) or allow "
                "ungeoreferenced input"
            )
        # Coordinates stay the raster's own; a pixel is taken to be MAP_GSD metres.
        col, row = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
        scale = (MAP_GSD / col, MAP_GSD / row)
    else:
        scale = _ground_scale(ds.crs, t, ds.width, ds.height)
    pixel_m = (
        math.hypot(t.a * scale[0], t.d * scale[1]),
        math.hypot(t.b * scale[0], t.e * scale[1]),
    )
    if not all(math.isfinite(v) and v > 0 for v in pixel_m):
        raise InputError(
            f"{name} has a degenerate geotransform {tuple(t)[:6]}; fix its "
            "georeferencing (gdal_edit.py -a_ullr ...)"
        )
    return MapInfo(ds.width, ds.height, t, ds.crs, has_alpha, scale, pixel_m)


@contextlib.contextmanager
def open_map(
    path: str | Path, allow_ungeoreferenced: bool = False
) -> Iterator[tuple[DatasetReader, MapInfo]]:
    """Open and validate a map raster; InputError (one line: problem and fix) when unusable."""
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioError as exc:
        raise InputError(
            f"cannot read {name} as a raster ({str(exc).splitlines()[0]}); give a "
            "map GeoTIFF such as the output of geomap-gan render"
        ) from None
    with ds:
        yield ds, _map_info(ds, name, allow_ungeoreferenced)


def exclusive(masks: dict[str, np.ndarray], valid: np.ndarray) -> dict[str, np.ndarray]:
    """Each pixel in at most one class: the latest in DRAW_ORDER wins, masked pixels in none."""
    taken = ~valid
    out: dict[str, np.ndarray] = {}
    for name in reversed(DRAW_ORDER):
        out[name] = masks[name] & ~taken
        taken |= out[name]
    return out


@functools.lru_cache(maxsize=1)
def colour_table() -> np.ndarray:
    """The class of every 24-bit colour, ``table[r | g << 8 | b << 16]``: 0 for none, else 1 +
    the class's index in DRAW_ORDER, from the legend's rules (``CLASS_RULES``, each a linear
    inequality on two channels at most, evaluated on the grid of the channels it weighs and
    broadcast) made exclusive as :func:`exclusive` does. 16 MB, built once per process (a few
    tenths of a second): classifying a pixel is then one lookup instead of about ten signed
    operations. ``tests/vector`` checks it against :func:`geomap_gan.legend.class_masks` on
    every colour."""
    levels = np.arange(256, dtype=np.int16)
    axes = {0: (1, 1, 256), 1: (1, 256, 1), 2: (256, 1, 1)}  # r, g, b on the [b, g, r] grid
    table = np.zeros((256, 256, 256), dtype=np.uint8)
    taken = np.zeros((256, 256, 256), dtype=bool)
    for name in reversed(DRAW_ORDER):
        mask = np.ones((256, 256, 256), dtype=bool)
        for weights, threshold in CLASS_RULES[name]:
            value = sum(
                (w * levels).reshape(axes[c]) for c, w in enumerate(weights) if w
            )  # broadcasts over the channels the rule weighs only
            mask &= np.asarray(value) >= threshold
        mask &= ~taken
        table[mask] = DRAW_ORDER.index(name) + 1
        taken |= mask
    return table.reshape(-1)


def _classes(rgb: np.ndarray, table: np.ndarray | None) -> np.ndarray:
    """Class codes (0 none, 1 + DRAW_ORDER index) of (3, rows, cols) uint8 RGB."""
    if table is not None:
        packed = np.zeros(rgb.shape[1:] + (4,), dtype=np.uint8)
        packed[..., :3] = np.moveaxis(rgb, 0, -1)
        return table[packed.view("<u4")[..., 0]]
    out = np.zeros(rgb.shape[1:], dtype=np.uint8)
    for r in range(0, rgb.shape[1], BLOCK_ROWS):  # the rules' signed temporaries stay small
        part = np.moveaxis(rgb[:, r : r + BLOCK_ROWS], 0, -1)
        masks = exclusive(class_masks(part), np.ones(part.shape[:2], dtype=bool))
        for k, name in enumerate(DRAW_ORDER):
            out[r : r + BLOCK_ROWS][masks[name]] = k + 1
    return out


TABLE_PIXELS = 1 << 24
"""Maps of at least this many pixels are classified through :func:`colour_table` (its half
second of set-up is then won back); smaller ones by the rules directly."""


def read_masks(ds: DatasetReader, info: MapInfo, row0: int, row1: int) -> dict[str, np.ndarray]:
    """Exclusive boolean class masks of rows [row0, row1) (all classes: exclusivity needs them).

    Read a block row of the file at a time (a window that cuts the file's blocks would have
    GDAL decode them again for each window), classified by colour table (large maps) or by the
    legend's rules a block of rows at a time (their signed temporaries would otherwise take
    several times the strip's RGB). Masked pixels (nodata, alpha 0, a mask band) are in no
    class; a map whose every pixel is valid skips the mask read."""
    table = colour_table() if info.width * info.height >= TABLE_PIXELS else None
    code = np.empty((row1 - row0, info.width), dtype=np.uint8)
    step = min(max(BLOCK_ROWS, ds.block_shapes[0][0]), READ_ROWS)
    flags = [set(f) for f in ds.mask_flag_enums[:3]]
    all_valid = not info.has_alpha and all(f == {MaskFlags.all_valid} for f in flags)
    # An RGBA map whose mask is its alpha band (ours): one read gives both.
    alpha_only = info.has_alpha and all(
        f == {MaskFlags.per_dataset, MaskFlags.alpha} for f in flags
    )
    r = row0
    while r < row1:
        r1 = min((r // step + 1) * step, row1)  # whole blocks of the file where possible
        window = Window(0, r, info.width, r1 - r)
        alpha = None
        if table is not None:  # read straight into R, G, B, 0 per pixel: one lookup each
            packed = np.zeros((r1 - r, info.width, 4), dtype=np.uint8)
            bands = (1, 2, 3, 4) if alpha_only else (1, 2, 3)
            ds.read(bands, window=window, out=np.moveaxis(packed, -1, 0)[: len(bands)])
            if alpha_only:
                alpha = packed[..., 3] == 0
                packed[..., 3] = 0
            part = table[packed.view("<u4")[..., 0]]
            del packed
        else:
            data = ds.read((1, 2, 3, 4) if alpha_only else (1, 2, 3), window=window)
            part = _classes(data[:3], None)
            alpha = data[3] == 0 if alpha_only else None
        if alpha is not None:
            part[alpha] = 0
        elif not all_valid:
            valid = ds.dataset_mask(window=window) > 0  # GDAL's rules: nodata, alpha, mask band
            if info.has_alpha:
                valid &= ds.read(4, window=window) > 0
            part[~valid] = 0
        code[r - row0 : r1 - row0] = part
        r = r1
    return {name: code == k + 1 for k, name in enumerate(DRAW_ORDER)}
