"""Drawing vector layers in the training maps' style: each class in the legend's colour, in the
legend's drawing order, on its background colour; areas filled, lines stroked at a width in metres.

Geometries are drawn in the pixel coordinates of the render grid (x = column, y = row, pixel
corners on integers): that grid has square pixels of the model's GSD on the ground whatever the
CRS (:func:`geomap_gan.rendering.grid.model_grid`), so a stroke of ``w`` metres is a buffer of
``w / gsd / 2`` pixels either side of its centre line in any CRS, geographic ones included. A pixel
takes a class when its centre lies inside the class's (buffered) geometry, as
``rasterio.features.rasterize`` does by default, so a crafted layer has exactly predictable pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from affine import Affine

from geomap_gan.errors import InputError
from geomap_gan.legend import AREA_CLASSES, BACKGROUND, CLASSES, COLOURS, DRAW_ORDER, LINE_CLASSES

# Stroke widths of the training maps' line classes, in pixels of their 286 px copy (the model's
# GSD, 1.888 m): each class's colour-rule mask in the right halves of maps286/train, its area
# divided by its skeleton length per connected stroke, the length-weighted median over the strokes
# at least 30 px long (12,199 road and 795 highway strokes; :func:`measure_stroke_widths`). The
# skeleton's distance transform agrees (2 x distance, median: road 2.0, highway 4.0 px).
STROKE_PX: dict[str, float] = {"road": 2.26, "highway": 3.31}
"""Default stroke width per line class, pixels of the model grid."""


def default_widths(gsd: float) -> dict[str, float]:
    """Default stroke width per line class in metres for a model of ``gsd`` metres per pixel:
    the training maps' widths in pixels, which a model learns at its own GSD."""
    return {c: round(px * gsd, 2) for c, px in STROKE_PX.items()}


def parse_width(text: str) -> tuple[str, float]:
    """``CLASS=M`` (``--width road=6``) -> (class, metres); InputError when malformed."""
    name, sep, value = text.partition("=")
    name = name.strip()
    try:
        metres = float(value)
    except ValueError:
        metres = float("nan")
    if not sep or not np.isfinite(metres) or metres <= 0:
        raise InputError(f"--width needs CLASS=METRES with METRES above 0 (road=6), got {text!r}")
    check_class(name, "--width")
    return name, metres


def check_class(name: str, option: str) -> None:
    """InputError unless ``name`` is a class of the legend."""
    if name not in CLASSES:
        raise InputError(
            f"{option}: {name!r} is not a map class; the legend has {', '.join(CLASSES)}"
        )


@dataclass
class ClassShapes:
    """One class's geometries in grid pixel coordinates, ready to rasterise: polygons (areas as
    given, lines already buffered to their stroke width) with a spatial index."""

    name: str
    geometries: np.ndarray  # shapely polygons, grid pixel coordinates
    tree: shapely.STRtree = field(init=False)

    def __post_init__(self) -> None:
        self.tree = shapely.STRtree(self.geometries)

    def within(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """The geometries whose envelope meets the box [x0, x1] x [y0, y1]."""
        return self.geometries[self.tree.query(shapely.box(x0, y0, x1, y1))]


def to_drawable(
    name: str, geometries: Sequence[object], widths_px: Sequence[float] | None = None
) -> np.ndarray:
    """Geometries of class ``name`` in grid pixel coordinates as polygons to fill: polygons as
    they are (a road layer may hold road areas), lines buffered by half their stroke width
    (``widths_px``, one per geometry, pixels, NaN for none; round ends and joins, as a map draws them), points
    dropped. InputError when a line has no width (an area class without --width)."""
    geoms = np.asarray(geometries, dtype=object)
    if len(geoms) == 0:
        return geoms
    geoms = geoms[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]
    parts = shapely.get_parts(geoms, return_index=True)
    pieces, index = parts if isinstance(parts, tuple) else (parts, np.arange(len(parts)))
    kind = shapely.get_type_id(pieces)
    polygons = pieces[kind == 3]  # Polygon (multi-parts were split by get_parts)
    lines = pieces[(kind == 1) | (kind == 2)]  # LineString, LinearRing
    if len(lines):
        w = np.full(len(lines), np.nan)
        if widths_px is not None:
            w = np.asarray(widths_px, dtype=float)[index[(kind == 1) | (kind == 2)]]
        if not np.isfinite(w).all():
            raise InputError(
                f"the {name} layer has lines without a stroke width ({name} is drawn as areas "
                f"by default); give --width {name}=METRES or a 'width' attribute in metres"
            )
        buffered = shapely.buffer(lines, w / 2, cap_style="round", join_style="round")
        polygons = np.concatenate([polygons, buffered])
    polygons = polygons[~shapely.is_empty(polygons)]
    invalid = ~shapely.is_valid(polygons)
    if invalid.any():
        polygons[invalid] = shapely.make_valid(polygons[invalid])
    return polygons


def draw_tile(
    classes: Iterable[ClassShapes],
    x0: int,
    y0: int,
    width: int,
    height: int,
    base: np.ndarray | None = None,
) -> np.ndarray:
    """The map of grid pixels [x0, x0+width) x [y0, y0+height) as (height, width, 3) uint8 RGB:
    ``base`` (a map raster's pixels, (height, width, 3)) or the legend's background, then each
    class in the legend's drawing order and colour."""
    from rasterio.features import rasterize

    if base is None:
        tile = np.empty((height, width, 3), np.uint8)
        tile[:] = BACKGROUND
    else:
        tile = np.array(base, dtype=np.uint8, copy=True)
    by_name = {c.name: c for c in classes}
    transform = Affine.translation(x0, y0)  # tile pixel -> grid pixel coordinates
    for name in DRAW_ORDER:
        shapes = by_name.get(name)
        if shapes is None:
            continue
        found = shapes.within(x0, y0, x0 + width, y0 + height)
        if not len(found):
            continue
        mask = rasterize(
            ((g, 1) for g in found),
            out_shape=(height, width),
            transform=transform,
            fill=0,
            dtype="uint8",
        ).astype(bool)
        tile[mask] = COLOURS[name]
    return tile


def measure_stroke_widths(
    maps: Iterable[np.ndarray], min_length: int = 30
) -> Mapping[str, tuple[float, list[tuple[float, float]]]]:
    """Stroke width of each line class in (H, W, 3) uint8 maps, pixels: the length-weighted median
    of area / skeleton length over every stroke (8-connected piece of the class's colour-rule
    mask) of at least ``min_length`` px. Returns {class: (median, [(width, length), ...])}."""
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    from geomap_gan.legend import class_masks

    found: dict[str, list[tuple[float, float]]] = {c: [] for c in LINE_CLASSES}
    for rgb in maps:
        masks = class_masks(rgb)
        for c in LINE_CLASSES:
            mask = masks[c]
            if not mask.any():
                continue
            labels, n = ndi.label(mask, structure=np.ones((3, 3)))
            index = np.arange(1, n + 1)
            area = np.asarray(ndi.sum(mask, labels, index), dtype=float)
            length = np.asarray(ndi.sum(skeletonize(mask), labels, index), dtype=float)
            keep = length >= min_length
            found[c].extend(
                zip((area[keep] / length[keep]).tolist(), length[keep].tolist(), strict=True)
            )
    out: dict[str, tuple[float, list[tuple[float, float]]]] = {}
    for c, strokes in found.items():
        if not strokes:
            out[c] = (float("nan"), strokes)
            continue
        w = np.array([s[0] for s in strokes])
        n = np.array([s[1] for s in strokes])
        order = np.argsort(w)
        cum = np.cumsum(n[order])
        out[c] = (float(w[order][np.searchsorted(cum, cum[-1] / 2)]), strokes)
    return out


__all__ = [
    "AREA_CLASSES",
    "LINE_CLASSES",
    "STROKE_PX",
    "ClassShapes",
    "default_widths",
    "draw_tile",
    "measure_stroke_widths",
    "parse_width",
    "to_drawable",
]
