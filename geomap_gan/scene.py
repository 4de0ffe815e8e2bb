"""Stage 1 of the render path: open and validate a scene, pick its RGB bands, measure its
ground scale, and decide the render grid at the model's ground sample distance (a WarpedVRT when
it must be resampled, on the CRS lattice of the model's pixel size).

Conventions: band numbers are 1-based as in GDAL; arrays are band-first ``(bands, rows, cols)``;
GSD is ground metres per pixel; "render grid" is the pixel grid the model sees.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT

from .errors import InputError

if TYPE_CHECKING:
    from .resample import ResampledView

log = logging.getLogger(__name__)


WGS84_A = 6378137.0  # semi-major axis, metres


WGS84_E2 = 0.0066943799901413165  # first eccentricity squared


GSD_TOLERANCE = 1e-3  # relative; closer than this to the model's GSD renders without resampling


RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)


def open_raster(path: str | Path) -> DatasetReader:
    """Open a raster for reading; InputError if it is missing or GDAL cannot read it."""
    p = Path(path)
    if not str(path).startswith("/vsi") and not p.exists():
        raise InputError(f"input {path} does not exist; check the path")
    if p.is_dir():
        raise InputError(f"input {path} is a folder; give a raster file such as scene.tif")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as exc:
        raise InputError(
            f"{path} is not a raster GDAL can read ({one_line(exc)}); give a GeoTIFF"
        ) from exc


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def is_georeferenced(ds: DatasetReader) -> bool:
    """Whether the dataset has both a CRS and a geotransform (GCPs alone do not count)."""
    return ds.crs is not None and ds.transform != Affine.identity()


def check_georeferencing(ds: DatasetReader, allow_ungeoreferenced: bool) -> bool:
    """True when georeferenced; raises InputError when not, unless allowed (then False)."""
    if not is_georeferenced(ds):
        if allow_ungeoreferenced:
            log.warning("%s has no CRS or geotransform: rendering at its own resolution", ds.name)
            return False
        what = "no CRS" if ds.crs is None else "no geotransform"
        if ds.gcps[0]:
            what = "only ground control points"
        raise InputError(
            f"{ds.name} has {what}; georeference it (e.g. gdalwarp) or pass "
            "--allow-ungeoreferenced to render it in pixel space"
        )
    t = ds.transform
    if t.b != 0 or t.d != 0:
        raise InputError(
            f"{ds.name} has a rotated or sheared geotransform; warp it north-up first "
            "(gdalwarp in.tif out.tif)"
        )
    return True


def select_bands(ds: DatasetReader, requested: Sequence[int] | None) -> tuple[int, int, int]:
    """The 1-based (red, green, blue) band numbers: ``requested`` when given, else from the colour
    interpretation when it names red, green and blue, else (1, 2, 3)."""
    if ds.count < 3 and requested is None:
        raise InputError(
            f"{ds.name} has {ds.count} band(s), but the model needs colour (red, green, blue); "
            "give a 3-band RGB raster"
        )
    if np.dtype(ds.dtypes[0]).kind == "c":
        raise InputError(
            f"{ds.name} holds complex numbers (e.g. SAR); render needs real-valued imagery: "
            "convert to amplitude first (gdal_calc.py or rasterio)"
        )
    if requested is not None:
        bands = tuple(int(b) for b in requested)
        if len(bands) != 3:
            raise InputError(f"--bands needs three band numbers (red,green,blue), got {bands}")
        bad = [b for b in bands if not 1 <= b <= ds.count]
        if bad:
            raise InputError(
                f"band {bad[0]} is out of range: {ds.name} has bands 1 to {ds.count}; fix --bands"
            )
        return bands  # type: ignore[return-value]
    interp = list(ds.colorinterp)
    if all(c in interp for c in RGB):
        return tuple(interp.index(c) + 1 for c in RGB)  # type: ignore[return-value]
    log.info("%s: colour interpretation does not name RGB; using bands 1,2,3", ds.name)
    return (1, 2, 3)


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
    from .resample import ResampledView, can_resample_by_reads

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


def alpha_band(ds: DatasetReader | WarpedVRT) -> int | None:
    """1-based index of the alpha band, if the dataset has one."""
    return next((i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha), None)


def has_nodata_mask(ds: DatasetReader | WarpedVRT) -> bool:
    """Whether any band has a nodata value, alpha band or mask (anything but all-valid)."""
    return any(flags != [MaskFlags.all_valid] for flags in ds.mask_flag_enums)


def corrupt_input(name: str, exc: BaseException | str) -> InputError:
    """The error for a read that fails after the file opened (truncated or damaged data); names
    GDAL's root cause rather than rasterio's "see previous exception"."""
    detail = exc if isinstance(exc, str) else one_line(_root_cause(exc))
    return InputError(f"{name} could not be read ({detail}); the file is truncated or corrupt")


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


# GDAL/libtiff/libjpeg messages that mean the pixel data is damaged (not benign tag warnings)
CORRUPTION_HINTS = (
    "corrupt jpeg data",
    "premature end",
    "tiffreadencoded",
    "tifffilltile",
    "tifffillstrip",
    "ireadblock failed",
    "read error at",
)


class _DamageFilter(logging.Filter):
    """On rasterio's GDAL-message logger: keeps the first damaged-data message of each thread
    in ``_MESSAGES`` and drops those records (the render then fails with one error line instead
    of a screen of warnings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.levelno >= logging.WARNING and any(h in text.lower() for h in CORRUPTION_HINTS):
            _MESSAGES.setdefault(record.thread or 0, text.replace("CPLE_AppDefined:", ""))
            return False
        return True


class CorruptionWatch:
    """GDAL reports some damaged data (libjpeg's "Corrupt JPEG data" inside a JPEG-compressed
    GeoTIFF) as a warning and returns garbage pixels; :meth:`check` turns such a message into the
    corrupt-input error. Per thread, because GDAL reports in the thread that read and the logger
    is the process's: two renders running at once in one process (QGIS, a notebook, a Dask
    worker) each see only the damage their own reads met."""

    def check(self, name: str) -> None:
        """Raise the corrupt-input error if this thread's reads met damaged data."""
        message = _MESSAGES.pop(threading.get_ident(), None)
        if message is not None:
            raise corrupt_input(name, message)


_MESSAGES: dict[int, str] = {}  # thread id -> its first damaged-data message, until checked
_FILTER = _DamageFilter()
_WATCH_LOCK = threading.Lock()
_WATCHING = 0  # watches open now: the filter is installed while there is one
_LEVEL_BEFORE = logging.NOTSET  # the logger's level before the first of them


@contextlib.contextmanager
def watch_corruption() -> Iterator[CorruptionWatch]:
    """A :class:`CorruptionWatch` for the duration; the shared filter is installed by the first
    open watch and removed (with the logger's level restored) by the last."""
    global _WATCHING, _LEVEL_BEFORE
    logger = logging.getLogger("rasterio._err")
    with _WATCH_LOCK:
        if _WATCHING == 0:
            _LEVEL_BEFORE = logger.level
            if logger.getEffectiveLevel() > logging.WARNING:
                logger.setLevel(logging.WARNING)
            logger.addFilter(_FILTER)
        _WATCHING += 1
    _MESSAGES.pop(threading.get_ident(), None)  # nothing left over from an earlier render
    try:
        yield CorruptionWatch()
    finally:
        with _WATCH_LOCK:
            _WATCHING -= 1
            if _WATCHING == 0:
                logger.removeFilter(_FILTER)
                logger.setLevel(_LEVEL_BEFORE)
