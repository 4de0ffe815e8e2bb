"""The map side of training pairs: the user's vector layers read into the scene's render-grid
pixels (any CRS, filtered by attribute), the coverage polygon where they are complete, and map
rasters of any style reprojected onto the grid."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from geomap_gan.errors import InputError
from geomap_gan.training.draw import (
    ClassShapes,
    check_class,
    to_drawable,
)

if TYPE_CHECKING:
    from rasterio.crs import CRS

    from geomap_gan.rendering.grid import Grid
    from geomap_gan.rendering.reader import RegionReader


log = logging.getLogger(__name__)


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
