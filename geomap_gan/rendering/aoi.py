"""Areas of interest: parse GeoJSON or WKT (inline or from a file), find their CRS, and bring
them into the pixel coordinates of a render grid, where tiling decides which windows to render
and rasterisation masks the output outside the area.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import shapely
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError
from shapely.geometry.base import BaseGeometry

from geomap_gan.errors import InputError
from geomap_gan.rendering.grid import Grid
from geomap_gan.rendering.scene import one_line

log = logging.getLogger(__name__)

MAX_AOI_BYTES = 256 << 20  # an AOI file larger than this is not an area of interest


def _aoi_text(aoi: str) -> str:
    text = aoi.strip()
    upper = text.upper()
    if text.startswith("{") or upper.startswith("SRID=") or "(" in text or upper.endswith("EMPTY"):
        return text
    path = Path(text).expanduser()
    if not path.is_file():
        raise InputError(
            f"--aoi {aoi!r} is neither a file nor GeoJSON/WKT text; give a .geojson/.wkt file "
            "or a polygon such as 'POLYGON((lon lat, ...))'"
        )
    if path.stat().st_size > MAX_AOI_BYTES:
        raise InputError(
            f"the AOI file {path} is over {MAX_AOI_BYTES >> 20} MB; simplify it (e.g. ogr2ogr "
            "-simplify) or clip it to the scene"
        )
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the AOI file {path} ({exc})") from exc


def _geojson_geometry(data: object) -> tuple[object, str | None]:
    """(shapely geometry, CRS named in the GeoJSON or None) of a GeoJSON object."""
    from shapely.geometry import shape
    from shapely.ops import unary_union

    if not isinstance(data, dict):
        raise InputError("the AOI GeoJSON is not an object")
    crs = None
    if isinstance(data.get("crs"), dict):
        crs = data["crs"].get("properties", {}).get("name")
    kind = data.get("type")
    if kind == "FeatureCollection":
        geoms = [shape(f["geometry"]) for f in data.get("features", []) if f.get("geometry")]
        return unary_union(geoms) if geoms else None, crs
    if kind == "Feature":
        return (shape(data["geometry"]) if data.get("geometry") else None), crs
    return shape(data), crs


def parse_aoi(aoi: object, aoi_crs: str | None = None) -> tuple[object, CRS]:
    """An AOI (shapely geometry, GeoJSON or WKT text, or a path to a file holding either) as a
    polygonal shapely geometry and its CRS: ``aoi_crs`` if given, else a CRS named in the text
    (GeoJSON ``crs`` member, EWKT ``SRID=n;``), else EPSG:4326."""
    named: str | None = None
    text = "" if isinstance(aoi, BaseGeometry) else _aoi_text(str(aoi))
    try:
        if isinstance(aoi, BaseGeometry):
            geom = aoi
        else:
            if text.startswith("{"):
                geom, named = _geojson_geometry(json.loads(text))
            else:
                if text.upper().startswith("SRID="):
                    srid, text = text.split(";", 1)
                    named = f"EPSG:{srid.split('=', 1)[1].strip()}"
                geom = shapely.from_wkt(text)
    except RecursionError:
        raise InputError(
            "the AOI is nested too deeply to be GeoJSON geometry (a polygon nests 3 levels)"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, shapely.errors.ShapelyError) as exc:
        raise InputError(f"the AOI is not valid GeoJSON or WKT ({one_line(exc)})") from exc
    if geom is None or geom.is_empty:
        raise InputError("the AOI is empty; give at least one polygon")
    if not geom.is_valid:  # said, not silently repaired: the user may have meant another shape
        log.warning(
            "the AOI is not a valid polygon (%s); rendering its repaired shape",
            shapely.is_valid_reason(geom),
        )
        geom = shapely.make_valid(geom)
    polygons = [
        g for g in getattr(geom, "geoms", [geom]) if g.geom_type in ("Polygon", "MultiPolygon")
    ]
    if not polygons or sum(p.area for p in polygons) <= 0:
        raise InputError(f"the AOI must be a polygon with an area, got a {geom.geom_type}")
    geom = shapely.union_all(polygons)
    try:
        crs = CRS.from_user_input(aoi_crs or named or "EPSG:4326")
    except (CRSError, RasterioError, ValueError) as exc:
        raise InputError(f"unknown AOI CRS {aoi_crs or named!r}; give e.g. EPSG:4326") from exc
    return geom, crs


def aoi_to_pixels(aoi: object, aoi_crs: CRS, grid: Grid) -> object:
    """The AOI in ``grid``'s pixel coordinates (column, row), clipped to the grid; InputError when
    it does not overlap the grid."""
    from rasterio.warp import transform_geom
    from shapely.affinity import affine_transform
    from shapely.geometry import box, mapping, shape

    if grid.crs is None:
        raise InputError("--aoi needs a georeferenced input (the input has no CRS)")
    try:
        geom = shape(transform_geom(aoi_crs, grid.crs, mapping(aoi)))
    except Exception as exc:  # GDAL raises CPLE_* errors that are not RasterioError here
        raise InputError(
            f"the AOI cannot be brought into the scene's CRS ({one_line(exc)}); it lies far "
            "outside the scene, or its CRS is not what it says (--aoi-crs)"
        ) from exc
    inv = ~grid.transform
    px = affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])
    if not px.is_valid:
        px = shapely.make_valid(px)
    clipped = px.intersection(box(0, 0, grid.width, grid.height))
    if clipped.is_empty or clipped.area <= 0:
        raise InputError(
            f"the AOI does not overlap the scene (AOI CRS {aoi_crs}); check its coordinates "
            "and CRS (--aoi-crs)"
        )
    return clipped
