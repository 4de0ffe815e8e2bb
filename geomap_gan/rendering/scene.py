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
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT

from geomap_gan import files
from geomap_gan.errors import InputError

log = logging.getLogger(__name__)


RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)


def open_raster(path: str | Path) -> DatasetReader:
    """Open a raster for reading; InputError if it is missing, not a regular file or GDAL
    virtual path (a FIFO would block GDAL forever), or GDAL cannot read it."""
    if not files.is_virtual(path) and Path(path).is_dir():
        raise InputError(f"input {path} is a folder; give a raster file such as scene.tif")
    files.check_input(path)
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
    """True when georeferenced; raises InputError when not, unless allowed (then False), and
    for a geotransform no grid can be built on (NaN, infinite or zero pixel size)."""
    t = ds.transform
    if not all(math.isfinite(v) for v in tuple(t)[:6]) or t.a == 0 or t.e == 0:
        raise InputError(
            f"{ds.name} has an unusable geotransform ({', '.join(f'{v:g}' for v in t.to_gdal())}"
            "): NaN, infinite or zero pixel size; fix its georeferencing (gdal_edit.py -a_ullr)"
        )
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
        return bands
    interp = list(ds.colorinterp)
    if all(c in interp for c in RGB):
        return tuple(interp.index(c) + 1 for c in RGB)  # type: ignore[return-value]
    log.info("%s: colour interpretation does not name RGB; using bands 1,2,3", ds.name)
    return (1, 2, 3)


def alpha_band(ds: DatasetReader | WarpedVRT) -> int | None:
    """1-based index of the alpha band, if the dataset has one."""
    return next((i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha), None)


def has_nodata_mask(ds: DatasetReader | WarpedVRT) -> bool:
    """Whether any band has a nodata value, alpha band or mask (anything but all-valid)."""
    return any(flags != [MaskFlags.all_valid] for flags in ds.mask_flag_enums)


def may_be_invalid(ds: DatasetReader | WarpedVRT) -> bool:
    """Whether some pixels may be invalid, so the output needs an alpha band: a nodata value,
    alpha band or mask, or floating-point data, where NaN is never a colour whether or not the
    file declares it as nodata (the reader treats it as invalid either way)."""
    return has_nodata_mask(ds) or any(np.dtype(d).kind == "f" for d in ds.dtypes)


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
