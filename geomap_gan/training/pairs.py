"""Training pairs from a user's imagery and map layers: a georeferenced scene (the aerial, A) and
vector layers drawn in the legend's style and/or a map raster (the map, B), cut into A|B images on
the render grid, in the trainer's layout (``OUT/train``, ``OUT/val``), with ``OUT/pairs.json``
recording where every pair came from.

The same grid as the renderer: the scene's render grid at the model's GSD on the CRS lattice
(:func:`geomap_gan.rendering.grid.model_grid`), read with the renderer's own resampling and 8-bit
scaling (``engine._plan``, ``resample.render_source``, ``reader.RegionReader``), so an aerial tile
holds exactly the pixels that the renderer would feed the model there; tiles start on the
network's stride lattice (``engine.lattice_phase``), so they see the render's stride phase.

The validation share is a spatial split: the grid is divided into square blocks, whole blocks
go to val, grown greedily as a compact region (:func:`split_tiles`), and a training tile that
overlaps or touches a val tile is dropped, so no val pixel was ever seen in training, not even
at a tile's edge. Tiles lie wholly inside the coverage
(where the layers are complete) and where the aerial (and the map raster) has valid pixels.

Nothing is written until the pairs are complete: they are made in a hidden scratch folder beside
``OUT`` (named by host and process, so a killed run's folder is removed by the next run) and
renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from geomap_gan import __version__, files
from geomap_gan.errors import InputError, OutputError, OutputExistsError, RenderCancelled
from geomap_gan.legend import BACKGROUND, COLOURS, DRAW_ORDER, LINE_CLASSES
from geomap_gan.training.draw import (
    ClassShapes,
    check_class,
    default_widths,
    draw_tile,
    to_drawable,
)

if TYPE_CHECKING:
    from rasterio.crs import CRS

    from geomap_gan.model.modelfile import ModelCard
    from geomap_gan.rendering.grid import Grid
    from geomap_gan.rendering.reader import RegionReader

log = logging.getLogger(__name__)

FORMAT = "geomap-gan-pairs/1"
PAIRS_FILE = "pairs.json"
PAIRS_ENTRIES = {PAIRS_FILE, "train", "val"}  # what --overwrite may replace
DEFAULT_TILE = 286  # the trainer's load size: it random-crops its 256 px crops from these
BLOCK_STEPS = (1, 2, 4, 8, 16, 32, 64)  # block sides tried for the split, in steps
MAX_BLOCKS = 400  # blocks at most in a split (its greedy choice is blocks x tiles per block)
# layer attributes (metres) that set each line feature's stroke width, the first found: a user's
# "width", or the "width_m" that `geomap-gan vectorize` writes
WIDTH_FIELDS = ("width", "width_m")


@dataclass(frozen=True)
class LayerSpec:
    """One ``--layer CLASS=FILE[:FIELD=VALUE,...]``: a vector file drawn as map class ``cls``,
    only its features whose FIELD equals VALUE (values of one field: any of them; different
    fields: all of them). ``FILE|layername=NAME`` picks a layer of a multi-layer file; without
    it, such a file's layer named as the class (what ``geomap-gan vectorize`` writes)."""

    cls: str
    path: str
    filters: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> LayerSpec:
        name, sep, rest = text.partition("=")
        name, rest = name.strip(), rest.strip()
        if not sep or not name or not rest:
            raise InputError(
                f"--layer needs CLASS=FILE[:FIELD=VALUE,...] (water=lakes.gpkg), got {text!r}"
            )
        check_class(name, "--layer")
        path = rest
        filters: tuple[tuple[str, str], ...] = ()
        head, colon, tail = rest.rpartition(":")
        drive = len(head) == 1 and head.isalpha()  # a Windows drive: C:/data/x.gpkg
        if colon and "=" in tail and head and not drive:
            path = head
            pairs = []
            for item in tail.split(","):
                key, eq, value = item.partition("=")
                if not eq or not key.strip():
                    raise InputError(f"--layer filter needs FIELD=VALUE, got {item!r} in {text!r}")
                pairs.append((key.strip(), value.strip()))
            filters = tuple(pairs)
        return cls(name, path, filters)

    def describe(self) -> str:
        where = ",".join(f"{k}={v}" for k, v in self.filters)
        return f"{self.cls}={self.path}" + (f":{where}" if where else "")


@dataclass(frozen=True)
class PairsOptions:
    """How to cut pairs. Units: pixels of the render grid; ``widths`` metres per class.

    ``tile``: side of a training pair's halves (the trainer random-crops the model's tile size
    from them); val pairs are the model's tile size, which the trainer evaluates uncropped.
    ``step``: distance between tile origins (0: half the tile, rounded down to the network's
    stride, so every tile starts on the render's stride lattice). ``val_share``: the share of
    tiles that go to val, in whole blocks of ``block`` px (0: the side that keeps the most
    training tiles, :func:`choose_split`). ``bands``, ``scale``:
    as for ``render``, and the fine-tuned model must be rendered with the same.
    """

    tile: int = DEFAULT_TILE
    step: int = 0
    val_share: float = 0.15
    block: int = 0
    seed: int = 0
    widths: Mapping[str, float] = field(default_factory=dict)
    bands: tuple[int, ...] | None = None
    scale: tuple[float, float] | None = None
    overwrite: bool = False

    def validate(self, model_tile: int) -> None:
        if not model_tile <= self.tile <= 4096:
            raise InputError(
                f"--tile must be {model_tile} (the model's tile) to 4096 px, got {self.tile}"
            )
        if self.step < 0 or self.block < 0:
            raise InputError("--step and --block must be 0 (auto) or more pixels")
        if not 0 <= self.val_share < 1:
            raise InputError(f"--val-share must be 0 or more and below 1, got {self.val_share}")
        for name, metres in self.widths.items():
            check_class(name, "--width")
            if not (math.isfinite(metres) and metres > 0):
                raise InputError(f"--width {name} must be above 0 metres, got {metres}")


@dataclass(frozen=True)
class Pair:
    """One written pair: its file (relative to OUT), split, window on the render grid
    (column, row, width, height) and bounds in the scene's CRS (left, bottom, right, top)."""

    file: str
    split: str
    window: tuple[int, int, int, int]
    bounds: tuple[float, float, float, float]


@dataclass(frozen=True)
class PairsResult:
    """What :func:`make_pairs` wrote."""

    out_dir: Path
    train: int
    val: int
    dropped: int  # training tiles dropped for touching a val tile
    tile: int
    val_tile: int
    step: int
    gsd: float
    crs: str
    width: int  # render grid, pixels
    height: int
    seconds: float


# ---- layers ------------------------------------------------------------------------------------
def _crs(text: Any, what: str) -> CRS:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    if not text:
        raise InputError(
            f"{what} has no CRS, or one that cannot be read; assign it first "
            "(ogr2ogr -a_srs EPSG:... out.gpkg in.gpkg)"
        )
    try:
        return CRS.from_user_input(text)
    except (CRSError, ValueError) as exc:
        raise InputError(f"{what} has a CRS that cannot be read ({exc}); assign one first") from exc


def _open_info(path: str, what: str, layer: str | None = None) -> dict[str, Any]:
    import pyogrio

    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what} {path} does not exist")
    try:
        return pyogrio.read_info(str(p), layer=layer, force_total_bounds=True)
    except Exception as exc:
        from geomap_gan.rendering.scene import one_line

        raise InputError(
            f"cannot read {what} {path} ({one_line(exc)}); give a GeoPackage, Shapefile, "
            "GeoJSON or FlatGeobuf file"
        ) from exc


def _pick_layer(path: str, cls: str) -> tuple[str, str | None]:
    """(file, layer name or None for its only layer) of a ``FILE[|layername=NAME]`` source: the
    named layer; else a file's only layer; else, in a multi-layer file (a GeoPackage that
    ``geomap-gan vectorize`` wrote), the layer named as the class."""
    import pyogrio

    file, _, named = path.partition("|layername=")
    p = Path(file).expanduser()
    if not p.exists():
        raise InputError(f"layer {cls}={path}: {file} does not exist")
    try:
        names = [str(n) for n in pyogrio.list_layers(str(p))[:, 0]]
    except Exception:
        return file, None  # _open_info says what is wrong with it
    if named:
        if named not in names:
            raise InputError(f"{file} has no layer {named!r}; its layers are {', '.join(names)}")
        return file, named
    if len(names) <= 1:
        return file, None
    if cls in names:
        return file, cls
    raise InputError(
        f"{file} holds {len(names)} layers ({', '.join(names)}); name one: "
        f"--layer {cls}={file}|layername=NAME"
    )


def _to_grid_pixels(geoms: np.ndarray, src: CRS, grid: Grid) -> np.ndarray:
    """Geometries in CRS ``src`` -> grid pixel coordinates (column, row)."""
    from pyproj import CRS as ProjCRS
    from pyproj import Transformer

    assert grid.crs is not None
    tr = None
    if src != grid.crs:
        tr = Transformer.from_crs(
            ProjCRS.from_wkt(src.to_wkt()), ProjCRS.from_wkt(grid.crs.to_wkt()), always_xy=True
        )
    inv = ~grid.transform

    def move(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        if tr is not None:
            x, y = tr.transform(x, y)
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        return np.column_stack([inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f])

    out = shapely.transform(geoms, move)
    bad = ~np.isfinite(shapely.bounds(out)).all(axis=1) & ~shapely.is_empty(out)
    return out[~bad]


def _scene_bbox_in(src: CRS, grid: Grid) -> tuple[float, float, float, float] | None:
    """The render grid's bounds in CRS ``src`` (a read filter), None when they cannot be found."""
    from rasterio.warp import transform_bounds

    assert grid.crs is not None
    t = grid.transform
    xs, ys = (t.c, t.c + t.a * grid.width), (t.f, t.f + t.e * grid.height)
    try:
        out = transform_bounds(grid.crs, src, min(xs), min(ys), max(xs), max(ys), densify_pts=21)
    except Exception:
        return None
    return out if all(math.isfinite(v) for v in out) else None


def _matches(field_data: Mapping[str, np.ndarray], filters: Sequence[tuple[str, str]], n: int
             ) -> np.ndarray:  # fmt: skip
    keep = np.ones(n, dtype=bool)
    by_field: dict[str, list[str]] = {}
    for key, value in filters:
        by_field.setdefault(key, []).append(value)
    for key, values in by_field.items():
        column = np.array([("" if v is None else str(v)) for v in field_data[key]], dtype=object)
        keep &= np.isin(column, values)
    return keep


def read_layer(
    spec: LayerSpec, grid: Grid, gsd: float, widths: Mapping[str, float]
) -> tuple[ClassShapes, dict[str, Any]]:
    """The features of ``spec`` in grid pixel coordinates, ready to draw, and a record of what was
    read. Lines of a line class are stroked at their ``width`` attribute (metres) where it is
    above 0, else ``widths[class]``; lines of an area class need one of the two."""
    import pyogrio.raw

    what = f"layer {spec.describe()}"
    file, layer = _pick_layer(spec.path, spec.cls)
    info = _open_info(file, "layer", layer)
    src = _crs(info.get("crs"), what)
    names = [str(n) for n in info.get("fields", [])]
    missing = sorted({k for k, _ in spec.filters} - set(names))
    if missing:
        raise InputError(
            f"{what}: no field {missing[0]!r}; its fields are {', '.join(names) or 'none'}"
        )
    width_field = next((n for f in WIDTH_FIELDS for n in names if n.lower() == f), None)
    columns = sorted({k for k, _ in spec.filters} | ({width_field} if width_field else set()))
    if not info.get("features"):
        raise InputError(f"{what} has no features")
    bbox = _scene_bbox_in(src, grid)
    try:
        _, _, wkb, field_data = pyogrio.raw.read(
            str(Path(file).expanduser()), layer=layer, columns=columns, bbox=bbox
        )
    except Exception as exc:
        from geomap_gan.rendering.scene import one_line

        raise InputError(f"cannot read {what} ({one_line(exc)})") from exc
    data = dict(zip(columns, field_data, strict=True))
    geoms = shapely.from_wkb(wkb) if len(wkb) else np.array([], dtype=object)
    keep = _matches(data, spec.filters, len(geoms))
    if spec.filters and len(geoms) and not keep.any():
        raise InputError(f"{what}: no feature over the scene has {spec.describe().split(':')[-1]}")
    per_feature = None
    if width_field is not None:
        values = np.asarray(data[width_field], dtype=object)
        per_feature = np.array([float(v) if _positive(v) else np.nan for v in values], dtype=float)[
            keep
        ]
    geoms = geoms[keep]
    px = _to_grid_pixels(geoms, src, grid)
    if per_feature is not None and len(px) != len(per_feature):  # rows dropped as unprojectable
        per_feature = None
    inside = shapely.intersects(px, shapely.box(0, 0, grid.width, grid.height))
    px = px[inside]
    if per_feature is not None:
        per_feature = per_feature[inside]
    if len(px) == 0:
        bounds = info.get("total_bounds")
        extent = ", ".join(f"{v:.6g}" for v in bounds) if bounds is not None else "unknown"
        raise InputError(
            f"{what} does not overlap the scene (its extent {extent} in {src.to_string()}); "
            "check the file and its CRS"
        )
    default = widths.get(spec.cls)  # metres; None for an area class without --width
    stroke_m = np.full(len(px), np.nan if default is None else default, dtype=float)
    if per_feature is not None:
        stroke_m = np.where(np.isfinite(per_feature), per_feature, stroke_m)
    widths_px = None if np.isnan(stroke_m).all() else (stroke_m / gsd).tolist()
    drawable = to_drawable(spec.cls, px, widths_px)
    record = {
        "class": spec.cls,
        "path": os.path.abspath(Path(file).expanduser()),
        "layer": layer,
        "filters": [list(f) for f in spec.filters],
        "crs": src.to_string(),
        "features": int(len(px)),
        "width_field": width_field,
        "width_m": default,
    }
    return ClassShapes(spec.cls, drawable), record


def _positive(value: Any) -> bool:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v > 0


def merge_classes(found: Sequence[ClassShapes]) -> list[ClassShapes]:
    """One ClassShapes per class (several layers of one class are drawn as one)."""
    by: dict[str, list[np.ndarray]] = {}
    for c in found:
        by.setdefault(c.name, []).append(c.geometries)
    return [ClassShapes(name, np.concatenate(parts)) for name, parts in by.items()]


# ---- coverage ----------------------------------------------------------------------------------
def read_coverage(text: str, grid: Grid) -> tuple[Any, dict[str, Any]]:
    """The coverage (a polygon file any GDAL vector driver reads, or GeoJSON/WKT text as --aoi)
    in grid pixel coordinates, clipped to the grid; InputError when it does not overlap it."""
    from geomap_gan.rendering.aoi import parse_aoi

    p = Path(text).expanduser()
    record: dict[str, Any] = {"source": os.path.abspath(p) if p.exists() else text}
    geom = None
    if p.is_file() and p.suffix.lower() not in (".wkt", ".txt"):
        import pyogrio.raw

        info = _open_info(str(p), "coverage")
        if info.get("crs") is None and p.suffix.lower() in (".geojson", ".json"):
            geom, crs = parse_aoi(str(p))  # GeoJSON without a crs member: EPSG:4326
        else:
            crs = _crs(info.get("crs"), f"coverage {text}")
            try:
                _, _, wkb, _ = pyogrio.raw.read(str(p), read_geometry=True, columns=[])
            except Exception as exc:
                raise InputError(f"cannot read the coverage {text} ({exc})") from exc
            parts = shapely.get_parts(shapely.from_wkb(wkb))
            polys = parts[np.isin(shapely.get_type_id(parts), (3, 6))]
            if not len(polys):
                raise InputError(f"the coverage {text} holds no polygons")
            geom = shapely.union_all(shapely.make_valid(polys))
    else:
        geom, crs = parse_aoi(text)
    px = _to_grid_pixels(np.array([geom], dtype=object), crs, grid)
    clipped = shapely.make_valid(px[0]).intersection(shapely.box(0, 0, grid.width, grid.height))
    if clipped.is_empty or clipped.area <= 0:
        raise InputError(
            f"the coverage {text} does not overlap the scene (coverage CRS {crs.to_string()}); "
            "check its coordinates and CRS"
        )
    record["crs"] = crs.to_string()
    record["share_of_scene"] = round(clipped.area / (grid.width * grid.height), 4)
    return clipped, record


# ---- map rasters -------------------------------------------------------------------------------
class MapRaster:
    """A map raster of any style read as 8-bit RGB on the render grid: the scene's own resampling
    when it is on the scene's pixel grid, else GDAL's warper (area average when shrinking, cubic
    when enlarging, nearest for a paletted map) with an alpha band for its footprint."""

    def __init__(self, path: str, grid: Grid, scene_ds: Any) -> None:
        from rasterio.enums import ColorInterp, Resampling
        from rasterio.vrt import WarpedVRT

        from geomap_gan.rendering import scene
        from geomap_gan.rendering.reader import RegionReader
        from geomap_gan.rendering.resample import render_source

        self.stack = contextlib.ExitStack()
        ds = self.stack.enter_context(scene.open_raster(path))
        self.name = path
        scene.check_georeferencing(ds, False)
        self.palette: np.ndarray | None = None
        if ds.count >= 3:
            bands: tuple[int, ...] = scene.select_bands(ds, None)
        elif ds.colorinterp[0] == ColorInterp.palette:
            bands = (1,)
            cmap = ds.colormap(1)
            self.palette = np.zeros((256, 3), np.uint8)
            for k, rgba in cmap.items():
                if 0 <= k < 256:
                    self.palette[k] = rgba[:3]
        else:
            bands = (1,)
        if np.dtype(ds.dtypes[bands[0] - 1]) != np.uint8:
            raise InputError(f"the map raster {path} is not 8-bit; give an RGB(A) or paletted map")
        same = (
            ds.crs == scene_ds.crs
            and ds.transform == scene_ds.transform
            and (ds.width, ds.height) == (scene_ds.width, scene_ds.height)
        )
        if same and self.palette is None:
            source: Any = render_source(ds, grid)
        else:
            shrink = self._shrinks(ds, grid)
            resampling = (
                Resampling.nearest
                if self.palette is not None
                else (Resampling.average if shrink else Resampling.cubic)
            )
            source = WarpedVRT(
                ds,
                crs=grid.crs,
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=resampling,
                add_alpha=scene.alpha_band(ds) is None,
            )
        if source is not ds:
            self.stack.enter_context(source)
        self.reader: RegionReader = RegionReader(source, bands, None, path)
        self.record = {"path": os.path.abspath(Path(path).expanduser()), "crs": ds.crs.to_string(),
                       "bands": list(bands), "paletted": self.palette is not None}  # fmt: skip

    @staticmethod
    def _shrinks(ds: Any, grid: Grid) -> bool:
        from geomap_gan.rendering.grid import ground_scale

        kx, _ = ground_scale(ds.crs, ds.transform, ds.width, ds.height)
        gx, _ = ground_scale(grid.crs, grid.transform, grid.width, grid.height)
        return abs(ds.transform.a) * kx < abs(grid.transform.a) * gx

    def valid(self, x: int, y: int, size: int) -> bool:
        from rasterio.windows import Window

        return bool(self.reader.valid(Window(x, y, size, size)).all())

    def read(self, x: int, y: int, size: int) -> np.ndarray:
        rgb, _ = self.reader.read(x, y, size, size)
        if self.palette is not None:
            return self.palette[rgb[0]]
        if rgb.shape[0] == 1:
            rgb = np.repeat(rgb, 3, axis=0)
        return np.ascontiguousarray(rgb.transpose(1, 2, 0))

    def close(self) -> None:
        self.stack.close()


# ---- tiles and the spatial split ---------------------------------------------------------------
def candidate_origins(
    width: int, height: int, tile: int, step: int, phase: tuple[int, int]
) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of ``tile`` px windows wholly inside a width x height grid, every
    ``step`` px from ``phase``, row by row."""
    xs = range(phase[0], width - tile + 1, step)
    ys = range(phase[1], height - tile + 1, step)
    return [(x, y) for y in ys for x in xs]


def split_tiles(
    origins: Sequence[tuple[int, int]],
    tile: int,
    val_tile: int,
    val_share: float,
    block: int,
    phase: tuple[int, int],
    seed: int,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int, int]:
    """(train, val, dropped, val blocks) of tile origins.

    The grid is cut into square blocks of ``block`` px (a tile belongs to the block of its
    centre) and whole blocks go to val until ``val_share`` of the tiles are val; a training tile
    (``tile`` px) that overlaps or touches a val tile (``val_tile`` px at the same origin) is
    dropped. Blocks are chosen greedily, each time the one that drops the fewest training tiles
    per val tile it adds (ties in a seeded random order): val grows as a compact region from the
    edge of the tiled area, so the ring of dropped tiles around it stays short.
    """
    if val_share <= 0 or len(origins) < 2:
        return list(origins), [], 0, 0
    xy = np.array(origins, dtype=np.int64)
    keys = np.stack(
        [(xy[:, 0] + tile // 2 - phase[0]) // block, (xy[:, 1] + tile // 2 - phase[1]) // block], 1
    )
    blocks, block_of = np.unique(keys, axis=0, return_inverse=True)
    block_of = block_of.ravel()
    n_blocks = len(blocks)
    # touches[i, b]: training tile i overlaps or touches (closed intervals) a val tile of block b
    x, y = xy[:, 0:1], xy[:, 1:2]
    touches = np.zeros((len(xy), n_blocks), dtype=bool)
    for b in range(n_blocks):
        vx, vy = xy[block_of == b, 0], xy[block_of == b, 1]
        touches[:, b] = (
            (x <= vx + val_tile) & (vx <= x + tile) & (y <= vy + val_tile) & (vy <= y + tile)
        ).any(axis=1)
    member = block_of[:, None] == np.arange(n_blocks)[None, :]  # tile i lies in block b
    size = member.sum(axis=0)
    priority = np.random.default_rng(seed).permutation(n_blocks)  # tie-break
    chosen = np.zeros(n_blocks, dtype=bool)
    in_val = np.zeros(len(xy), dtype=bool)
    dropped = np.zeros(len(xy), dtype=bool)
    goal = val_share * len(xy)
    while in_val.sum() < goal and not chosen.all():
        new_val = in_val[:, None] | member
        new_dropped = (dropped[:, None] | touches) & ~new_val
        cost = (new_dropped.sum(axis=0) - dropped.sum()) / np.maximum(size, 1)
        cost = np.where(chosen, np.inf, cost)
        order = np.lexsort((priority, cost))
        b = int(order[0])
        chosen[b] = True
        in_val |= member[:, b]
        dropped = (dropped | touches[:, b]) & ~in_val
    val = [tuple(map(int, o)) for o in xy[in_val]]
    train = [tuple(map(int, o)) for o in xy[~in_val & ~dropped]]
    return train, val, int(dropped.sum()), int(chosen.sum())  # type: ignore[return-value]


def choose_split(
    origins: Sequence[tuple[int, int]],
    tile: int,
    val_tile: int,
    val_share: float,
    block: int,
    step: int,
    phase: tuple[int, int],
    seed: int,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int, int, int]:
    """:func:`split_tiles` with ``block`` px blocks, or (``block`` 0) the block side among the
    three smallest of :data:`BLOCK_STEPS` that make at most :data:`MAX_BLOCKS` blocks which
    keeps the most training tiles (ties: the larger). Returns (train, val, dropped, val
    blocks, block side)."""
    if block:
        return (*split_tiles(origins, tile, val_tile, val_share, block, phase, seed), block)
    xy = np.array(origins, dtype=np.int64).reshape(-1, 2)
    sizes = []
    for k in BLOCK_STEPS:
        side = k * step
        keys = (xy + tile // 2 - np.array(phase)) // side
        if len(np.unique(keys, axis=0)) <= MAX_BLOCKS:
            sizes.append(side)
        if len(sizes) == 3:
            break
    best = None
    for side in sizes or [BLOCK_STEPS[-1] * step]:
        found = (*split_tiles(origins, tile, val_tile, val_share, side, phase, seed), side)
        if best is None or len(found[0]) >= len(best[0]):
            best = found
    assert best is not None
    return best


# ---- the output folder -------------------------------------------------------------------------
def check_out_dir(out_dir: Path, overwrite: bool, inputs: Sequence[str | Path]) -> Path:
    """``out_dir`` absolute, after checking that it may be written: its parent exists; it is a
    new or empty folder, or (with ``overwrite``) an earlier pairs folder; no input lies inside."""
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"OUT_DIR {out_dir} is a file; give a folder for the pairs")
    if not out.parent.is_dir():
        raise OutputError(f"the folder {out.parent} does not exist; create it first")
    for src in inputs:
        p = Path(src).expanduser().absolute()
        with contextlib.suppress(OSError):
            p = p.resolve()
        if p == out.resolve() or out.resolve() in p.parents:
            raise OutputError(f"OUT_DIR {out_dir} holds the input {src}; choose another folder")
    if out.is_dir():
        entries = sorted(e.name for e in out.iterdir() if e.name != files.MARKER)
        if entries and not overwrite:
            raise OutputExistsError(
                f"OUT_DIR {out_dir} holds other files ({entries[0]}, ...); pass --overwrite to "
                "replace an earlier pairs folder, or choose a new folder"
            )
        foreign = [e for e in entries if e not in PAIRS_ENTRIES]
        if entries and (foreign or not files.made_here(out)):
            what = foreign[0] if foreign else "files geomap-gan did not make"
            raise OutputError(
                f"OUT_DIR {out_dir} holds {what}, which is not an earlier pairs output; "
                "--overwrite replaces only a folder that `geomap-gan pairs` made: choose "
                "another folder"
            )
    return out


@contextlib.contextmanager
def scratch_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """A hidden folder beside ``out`` to write into, marked as made by geomap-gan
    (:func:`geomap_gan.files.scratch_dir`, so a later run removes it if this one is killed); on
    success it becomes ``out`` (an earlier pairs folder there is replaced only with
    ``overwrite``, an empty folder always), on any exception it is removed."""
    files.remove_stale(out)
    tmp = files.scratch_dir(out, "pairs")
    try:
        yield tmp
        old = None
        if out.exists():
            filled = any(e.name != files.MARKER for e in out.iterdir())
            if filled and not (overwrite and files.made_here(out)):
                raise OutputExistsError(
                    f"OUT_DIR {out} was filled while the pairs were made; it was left as it is"
                )
            old = files.temp_path(out, "old")
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None and not files.remove_made_dir(old):
            with contextlib.suppress(OSError):
                old.rmdir()  # the empty folder the user gave
    finally:
        if tmp.exists():
            files.remove_made_dir(tmp)


# ---- the command -------------------------------------------------------------------------------
def make_pairs(
    scene_path: str | Path,
    out_dir: str | Path,
    layers: Sequence[LayerSpec | str] = (),
    map_raster: str | Path | None = None,
    coverage: str | None = None,
    options: PairsOptions | None = None,
    model: Any = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    command: str = "",
) -> PairsResult:
    """Cut training pairs of ``scene_path`` (A) and its map (B: ``layers`` drawn in the legend's
    style, over ``map_raster`` when given, else over the legend's background) into ``out_dir``.

    ``model``: the model whose grid the pairs are cut on (a model file, a MapModel, or None for
    the bundled one). ``progress(done, total)`` counts pairs; ``cancel()`` returning True stops
    with RenderCancelled and nothing written. Raises a GeomapGanError subclass for every input a
    user can fix, before anything is written.
    """
    import rasterio

    from geomap_gan.model.modelfile import load_model
    from geomap_gan.rendering import scene
    from geomap_gan.rendering.engine import _plan
    from geomap_gan.rendering.options import RenderOptions
    from geomap_gan.rendering.reader import RegionReader
    from geomap_gan.rendering.resample import render_source
    from geomap_gan.rendering.windows import lattice_phase

    start = time.perf_counter()
    options = options or PairsOptions()
    specs = [s if isinstance(s, LayerSpec) else LayerSpec.parse(s) for s in layers]
    if not specs and map_raster is None:
        raise InputError("give the map: --layer CLASS=FILE (repeatable) and/or --map MAP.tif")
    inputs: list[str | Path] = [scene_path, *(s.path.partition("|")[0] for s in specs)]
    inputs += [map_raster] if map_raster is not None else []
    inputs += [coverage] if coverage is not None and Path(coverage).exists() else []
    out = check_out_dir(Path(out_dir), options.overwrite, inputs)
    card = load_model(model).card
    options.validate(card.tile_size)
    stride = 2**card.num_downs
    step = options.step or max(stride, options.tile // 2 // stride * stride)
    val_tile = card.tile_size
    # the renderer's reading of the scene; window options do not apply to pairs
    render_opts = RenderOptions(bands=options.bands, scale=options.scale, overlap=0)

    with rasterio.Env(), contextlib.ExitStack() as stack:
        ds = stack.enter_context(scene.open_raster(scene_path))
        plan = _plan(ds, card, render_opts)
        grid, gsd = plan.grid, float(card.gsd)
        widths = {**default_widths(gsd), **dict(options.widths)}
        classes: list[ClassShapes] = []
        layer_records = []
        for spec in specs:
            shapes, record = read_layer(spec, grid, gsd, widths)
            classes.append(shapes)
            layer_records.append(record)
        classes = merge_classes(classes)
        cover_px, cover_record = (None, None)
        if coverage is not None:
            cover_px, cover_record = read_coverage(coverage, grid)
        elif specs:
            log.warning(
                "no --coverage: the whole scene is taken as mapped by the layers; anything "
                "missing from them teaches the model to leave it out"
            )
        base: MapRaster | None = None
        if map_raster is not None:
            base = MapRaster(str(map_raster), grid, ds)
            stack.callback(base.close)
        source = render_source(ds, grid)
        if source is not ds:
            stack.enter_context(source)
        aerial = RegionReader(source, plan.bands, plan.stretch, str(scene_path), None, plan.lut)

        phase = lattice_phase(grid.transform, stride)
        origins = candidate_origins(grid.width, grid.height, options.tile, step, phase)
        eligible = _eligible(origins, options.tile, cover_px, aerial, base)
        if not eligible:
            where = " inside the coverage" if cover_px is not None else ""
            raise InputError(
                f"no whole {options.tile} px tile of the scene's {grid.width}x{grid.height} px "
                f"render grid lies{where} where the aerial{' and the map' if base else ''} "
                "have valid pixels; give a larger coverage or a smaller --tile"
            )
        train, val, dropped, val_blocks, block = choose_split(
            eligible, options.tile, val_tile, options.val_share, options.block, step, phase,
            options.seed,
        )  # fmt: skip
        if not train:
            raise InputError(
                f"all {len(eligible)} tiles went to val or next to it; lower --val-share, "
                "or give a larger coverage"
            )
        log.info(
            "%s: render grid %dx%d px at %.4g m/px, %d tiles (%d px, step %d): %d train, %d val "
            "(%d blocks of %d px), %d dropped next to val",
            scene_path, grid.width, grid.height, gsd, len(eligible), options.tile, step,
            len(train), len(val), val_blocks, block, dropped,
        )  # fmt: skip

        jobs = [("train", o, options.tile) for o in train] + [("val", o, val_tile) for o in val]
        written: list[Pair] = []
        with scratch_folder(out, options.overwrite) as tmp:
            (tmp / "train").mkdir()
            (tmp / "val").mkdir()
            for i, (split, (x, y), size) in enumerate(jobs):
                if cancel is not None and cancel():
                    raise RenderCancelled("cancelled; no pairs were written")
                written.append(_write_pair(tmp, split, x, y, size, aerial, base, classes, grid))
                if progress is not None:
                    progress(i + 1, len(jobs))
            manifest = _manifest(
                scene_path, ds, plan, card, model, grid, gsd, widths, layer_records, base,
                cover_record, options, step, block, val_tile, val_blocks, dropped, written,
                command,
            )  # fmt: skip
            (tmp / PAIRS_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    crs = grid.crs.to_string() if grid.crs else ""
    return PairsResult(out, len(train), len(val), dropped, options.tile, val_tile, step, gsd, crs,
                       grid.width, grid.height, time.perf_counter() - start)  # fmt: skip


def _eligible(
    origins: Sequence[tuple[int, int]],
    tile: int,
    cover: Any,
    aerial: RegionReader,
    base: MapRaster | None,
) -> list[tuple[int, int]]:
    """The origins whose tile lies wholly inside ``cover`` (None: anywhere) with every pixel of
    the aerial and the map raster valid."""
    from rasterio.windows import Window

    if cover is not None:
        shapely.prepare(cover)
        boxes = shapely.box(*np.array([(x, y, x + tile, y + tile) for x, y in origins]).T)
        origins = [o for o, ok in zip(origins, shapely.covers(cover, boxes), strict=True) if ok]
    kept = []
    for x, y in origins:
        if not aerial.valid(Window(x, y, tile, tile)).all():
            continue
        if base is not None and not base.valid(x, y, tile):
            continue
        kept.append((x, y))
    return kept


def _write_pair(
    folder: Path,
    split: str,
    x: int,
    y: int,
    size: int,
    aerial: RegionReader,
    base: MapRaster | None,
    classes: Sequence[ClassShapes],
    grid: Grid,
) -> Pair:
    from PIL import Image

    a, _ = aerial.read(x, y, size, size)
    b = draw_tile(classes, x, y, size, size, base.read(x, y, size) if base else None)
    name = f"{split}/x{x:06d}_y{y:06d}.png"
    image = np.concatenate([a.transpose(1, 2, 0), b], axis=1)
    Image.fromarray(image).save(folder / name, format="PNG", compress_level=3)
    return Pair(name, split, (x, y, size, size), window_bounds(grid, x, y, size))


def window_bounds(grid: Grid, x: int, y: int, size: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in the grid's CRS of the ``size`` px window at column ``x``,
    row ``y`` of the (north-up) render grid."""
    t = grid.transform
    xs, ys = (t.c + t.a * x, t.c + t.a * (x + size)), (t.f + t.e * y, t.f + t.e * (y + size))
    return min(xs), min(ys), max(xs), max(ys)


def _manifest(
    scene_path: str | Path,
    ds: Any,
    plan: Any,
    card: ModelCard,
    model: Any,
    grid: Grid,
    gsd: float,
    widths: Mapping[str, float],
    layers: list[dict[str, Any]],
    base: MapRaster | None,
    coverage: dict[str, Any] | None,
    options: PairsOptions,
    step: int,
    block: int,
    val_tile: int,
    val_blocks: int,
    dropped: int,
    pairs: list[Pair],
    command: str,
) -> dict[str, Any]:
    """pairs.json: enough to trace every pair to its place and to redo the pairs."""
    from geomap_gan.model.modelfile import default_model_path

    assert grid.crs is not None
    model_path = default_model_path() if model is None else getattr(model, "path", model)
    stretch = None
    if plan.stretch is not None:
        stretch = {"low": list(plan.stretch.low), "high": list(plan.stretch.high)}
    line_px = {c: round(widths[c] / gsd, 3) for c in LINE_CLASSES if c in widths}
    return {
        "format": FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "geomap_gan": __version__,
        "command": command,
        "scene": {
            "path": os.path.abspath(Path(scene_path).expanduser()),
            "size": [ds.width, ds.height],
            "crs": ds.crs.to_string(),
            "bands": list(plan.bands),
            "stretch": stretch,
            "scene_gsd": plan.scene_gsd,
        },
        "layers": layers,
        "map": base.record if base is not None else None,
        "coverage": coverage,
        "model": {
            "name": card.name,
            "path": str(model_path) if isinstance(model_path, (str, Path)) else None,
            "gsd": card.gsd,
            "tile_size": card.tile_size,
            "num_downs": card.num_downs,
        },
        "crs": grid.crs.to_string(),
        "crs_wkt": grid.crs.to_wkt(),
        "gsd": gsd,
        "grid": {
            "width": grid.width,
            "height": grid.height,
            "transform": list(tuple(grid.transform)[:6]),
        },
        "style": {
            "background": list(BACKGROUND),
            "colours": {c: list(COLOURS[c]) for c in DRAW_ORDER},
            "draw_order": list(DRAW_ORDER),
            "stroke_width_m": {c: widths[c] for c in LINE_CLASSES if c in widths},
            "stroke_width_px": line_px,
            "map_raster_below_layers": base is not None,
        },
        "tiles": {"train": options.tile, "val": val_tile, "step": step},
        "split": {
            "val_share": options.val_share,
            "block": block,
            "seed": options.seed,
            "val_blocks": val_blocks,
            "train": sum(p.split == "train" for p in pairs),
            "val": sum(p.split == "val" for p in pairs),
            "dropped_touching_val": dropped,
        },
        "pairs": [dataclasses.asdict(p) for p in pairs],
    }


def read_manifest(pairs_dir: str | Path) -> dict[str, Any] | None:
    """``pairs_dir/pairs.json`` as a dict, None when absent (a hand-made pair folder)."""
    path = Path(pairs_dir) / PAIRS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not readable JSON ({exc}); make the pairs again") from exc
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


__all__ = [
    "LINE_CLASSES",
    "LayerSpec",
    "PairsOptions",
    "PairsResult",
    "make_pairs",
    "read_manifest",
]
