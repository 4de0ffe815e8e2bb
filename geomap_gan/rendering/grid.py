"""The render grid: a scene's pixel grid at the model's ground sample distance, on the CRS
lattice of that pixel size, and the ground metres per CRS unit that place it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetReader

from geomap_gan.errors import InputError

WGS84_A = 6378137.0  # semi-major axis, metres


WGS84_E2 = 0.0066943799901413165  # first eccentricity squared


GSD_TOLERANCE = 1e-3  # relative; closer than this to the model's GSD renders without resampling


def _centre_lat(crs: CRS, transform: Affine, width: int, height: int) -> float:
    from rasterio.warp import transform as warp_transform

    cx = transform.c + transform.a * width / 2 + transform.b * height / 2
    cy = transform.f + transform.d * width / 2 + transform.e * height / 2
    if crs.is_geographic:
        return float(cy)
    _, lat = warp_transform(crs, "EPSG:4326", [cx], [cy])
    return float(lat[0])


def _linear_unit(crs: CRS) -> float:
    """Metres per CRS unit. A local engineering CRS (LOCAL_CS) has no projection that PROJ
    could ask, but its WKT names its unit and the unit's size in metres; an InputError when
    even that is missing."""
    import re

    from rasterio.errors import CRSError

    try:
        return float(crs.linear_units_factor[1])
    except CRSError:
        found = re.search(r'UNIT\["[^"]*",\s*([0-9.eE+-]+)', crs.to_wkt())
        if found and float(found.group(1)) > 0:
            return float(found.group(1))
        raise InputError(
            "the scene's CRS has no linear unit, so its pixel size in metres is unknown; "
            "assign a projected CRS first (gdal_edit.py -a_srs EPSG:...)"
        ) from None


def ground_scale(crs: CRS, transform: Affine, width: int, height: int) -> tuple[float, float]:
    """Ground metres per CRS unit along x and y at the scene centre.

    Geographic CRSs: metres per degree of longitude and latitude on the WGS84 ellipsoid. Mercator
    and Web Mercator: nominal metres shrink by cos(latitude) on the ground. Other projected CRSs:
    their linear unit in metres (their scale error is under a percent near their origin).
    """
    if crs.is_geographic:
        phi = math.radians(_centre_lat(crs, transform, width, height))
        w = 1 - WGS84_E2 * math.sin(phi) ** 2
        per_rad_lon = WGS84_A * math.cos(phi) / math.sqrt(w)
        per_rad_lat = WGS84_A * (1 - WGS84_E2) / w**1.5
        return per_rad_lon * math.pi / 180, per_rad_lat * math.pi / 180
    unit = _linear_unit(crs)
    if crs.to_dict().get("proj") == "merc":
        phi = math.radians(_centre_lat(crs, transform, width, height))
        k = math.cos(phi) / math.sqrt(1 - WGS84_E2 * math.sin(phi) ** 2)
        return unit * k, unit * k
    return unit, unit


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: size in pixels, transform, CRS (None when ungeoreferenced)."""

    width: int
    height: int
    transform: Affine
    crs: CRS | None

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def model_grid(ds: DatasetReader, gsd: float, max_upscale: float) -> tuple[Grid, float]:
    """The render grid of ``ds`` at ``gsd`` ground metres per pixel (same CRS, same top-left
    corner, same footprint within half a pixel) and the scene's own GSD in metres (mean of x
    and y).

    Raises InputError when reaching ``gsd`` means upsampling by more than ``max_upscale``.
    """
    kx, ky = ground_scale(ds.crs, ds.transform, ds.width, ds.height)
    gx, gy = abs(ds.transform.a) * kx, abs(ds.transform.e) * ky
    scene_gsd = (gx + gy) / 2
    native = Grid(ds.width, ds.height, ds.transform, ds.crs)
    if abs(gx / gsd - 1) < GSD_TOLERANCE and abs(gy / gsd - 1) < GSD_TOLERANCE:
        return native, scene_gsd
    if scene_gsd / gsd > max_upscale:
        raise InputError(
            f"{ds.name} has {scene_gsd:.3g} m pixels, {scene_gsd / gsd:.0f}x coarser than the "
            f"model's {gsd:.3g} m: upsampling that far invents detail; use finer imagery, or "
            f"pass --gsd {scene_gsd:.3g} to render at the scene's own resolution"
        )
    t = ds.transform
    rx, ry = gsd / kx, gsd / ky
    # The corners snap to the nearest multiple of the pixel size in the CRS (GDAL's -tap), so
    # every scene resampled to this GSD lands on one lattice: overlapping scenes, or a scene
    # and a cut-out of it, sample the same points and the network sees the same stride phase.
    # Rounded, so the footprint still matches within half a pixel on every side.
    x0, x1 = (round(v / rx) * rx for v in (t.c, t.c + ds.width * t.a))
    y0, y1 = (round(v / ry) * ry for v in (t.f, t.f + ds.height * t.e))
    width = max(1, round(abs(x1 - x0) / rx))
    height = max(1, round(abs(y1 - y0) / ry))
    transform = Affine(math.copysign(rx, t.a), 0.0, x0, 0.0, math.copysign(ry, t.e), y0)
    return Grid(width, height, transform, ds.crs), scene_gsd
