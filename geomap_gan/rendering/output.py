"""The last stage of the render path: the output file (the registry's intermediate format,
alpha, creation options), block-row writing with AOI masking, resampling back to the input grid,
the copy into formats without Create (COG), and the chain that turns the rendered file into the
user's output inside one atomic write. Every format decision reads :mod:`geomap_gan.formats`."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader, DatasetWriter
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geomap_gan import files, formats
from geomap_gan.errors import InputError, OutputError
from geomap_gan.formats import OutputFormat
from geomap_gan.rendering.grid import Grid
from geomap_gan.rendering.options import RenderOptions
from geomap_gan.rendering.reader import RegionReader
from geomap_gan.rendering.scene import RGB, CorruptionWatch, one_line

log = logging.getLogger(__name__)


OUTPUT_BLOCK = formats.OUTPUT_BLOCK  # pixels, GTiff tile side


def _upper_options(options: Mapping[str, str]) -> dict[str, str]:
    return formats.upper_options(options)


def gtiff_options(alpha: bool, creation_options: Mapping[str, str] | None = None) -> dict[str, str]:
    """Creation options of the rendered file (:data:`formats.INTERMEDIATE`, GTiff): tiled 256 px,
    DEFLATE with horizontal predictor, RGB photometric, BigTIFF when needed; ``--co`` wins."""
    return formats.INTERMEDIATE.options(creation_options, alpha=alpha)


def create_output(
    path: Path, grid: Grid, alpha: bool, creation_options: Mapping[str, str] | None = None
) -> DatasetWriter:
    """Open a new uint8 RGB(A) GeoTIFF (:data:`formats.INTERMEDIATE`) on ``grid`` for writing."""
    fmt = formats.INTERMEDIATE
    opts = fmt.options(creation_options, alpha=alpha)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dst = rasterio.open(
                path,
                "w",
                driver=fmt.driver,
                width=grid.width,
                height=grid.height,
                count=4 if alpha else 3,
                dtype="uint8",
                crs=grid.crs,
                transform=grid.transform,
                **opts,
            )
    except RasterioError as exc:
        raise OutputError(f"cannot create {path} ({one_line(exc)}); check --co options") from exc
    interp = [*RGB, ColorInterp.alpha] if alpha else list(RGB)
    dst.colorinterp = interp
    return dst


class BlockRowWriter:
    """Writes finished strips to ``dst`` in whole rows of output blocks (so GDAL never holds
    partial blocks), masking pixels outside the AOI, with the alpha band when ``dst`` has one.

    Strips come in grid rows; ``dst`` holds grid rows ``[offset, offset + dst.height)`` (a part of
    the grid when rendering in strips), rows outside it are dropped. Strips cover ``dst`` columns
    ``cols`` (the whole width by default; a panel of it otherwise, which should start on a block
    boundary so that writes cover whole blocks).
    """

    def __init__(
        self,
        dst: DatasetWriter,
        aoi_px: object | None = None,
        offset: int = 0,
        cols: tuple[int, int] | None = None,
    ) -> None:
        self.dst = dst
        self.aoi_px = aoi_px  # shapely geometry in the grid's pixel coordinates, or None
        self.offset = offset
        self.c0, self.c1 = cols if cols is not None else (0, int(dst.width))
        self.block = dst.block_shapes[0][0]
        self.alpha = dst.count == 4
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self._y = 0  # first dst row not yet written
        self._buffered = 0

    def add(self, y: int, rgb: np.ndarray, valid: np.ndarray) -> None:
        """Queue grid rows ``[y, y + rows)`` (following the previous ones); write whole block
        rows as they fill."""
        lo = max(y, self.offset)
        hi = min(y + valid.shape[0], self.offset + self.dst.height)
        if hi <= lo:
            return
        rgb, valid, y = rgb[:, lo - y : hi - y], valid[lo - y : hi - y], lo - self.offset
        if y != self._y + self._buffered:
            raise ValueError(f"strip at row {y} does not follow row {self._y + self._buffered}")
        self._parts.append((rgb, valid))
        self._buffered += valid.shape[0]
        end = self._y + self._buffered
        if end >= self.dst.height:
            self._write(self._buffered)
        elif self._buffered >= self.block:
            self._write((self._buffered // self.block) * self.block)

    def close(self) -> None:
        """Write what is left (the last, partial block row)."""
        if self._buffered:
            self._write(self._buffered)

    def _write(self, rows: int) -> None:
        rgb = np.concatenate([p[0] for p in self._parts], axis=1)
        valid = np.concatenate([p[1] for p in self._parts], axis=0)
        rest_rgb, rest_valid = rgb[:, rows:], valid[rows:]
        rgb, valid = rgb[:, :rows], valid[:rows]
        width = self.c1 - self.c0
        if self.aoi_px is not None:
            valid = valid & aoi_mask(self.aoi_px, self.c0, self.offset + self._y, rows, width)
            rgb = np.where(valid[None], rgb, 0).astype(np.uint8)
        window = Window(self.c0, self._y, width, rows)
        out = np.concatenate([rgb, (valid * np.uint8(255))[None]], axis=0) if self.alpha else rgb
        self.dst.write(out, window=window)
        self._parts = [(rest_rgb, rest_valid)] if rest_valid.shape[0] else []
        self._y += rows
        self._buffered -= rows


def aoi_mask(aoi_px: object, x: int, y: int, rows: int, cols: int) -> np.ndarray:
    """(rows, cols) bool: pixel centres of grid rows [y, y+rows) and columns [x, x+cols) inside
    the AOI (given in grid pixel coordinates)."""
    from rasterio.features import geometry_mask

    return geometry_mask(
        [aoi_px], out_shape=(rows, cols), transform=Affine.translation(x, y), invert=True
    )


def resample_to_grid(
    rendered: Path,
    dst: DatasetWriter,
    src: DatasetReader,
    bands: Sequence[int],
    aoi_px: object | None,
    watch: CorruptionWatch | None = None,
) -> None:
    """Warp a rendered map onto ``dst``'s grid (the input's own grid), block row by block row.

    Colour: cubic resampling. Validity: the input's own mask, the AOI, and where the rendered
    map had data (its alpha, nearest neighbour).
    """
    grid = dict(crs=dst.crs, transform=dst.transform, width=dst.width, height=dst.height)
    writer = BlockRowWriter(dst, aoi_px)
    reader = RegionReader(src, bands, None, src.name, watch)
    with rasterio.open(rendered) as ren:
        has_alpha = ren.count == 4
        with contextlib.ExitStack() as stack:
            colour = stack.enter_context(WarpedVRT(ren, resampling=Resampling.cubic, **grid))
            alpha_vrt = (
                stack.enter_context(WarpedVRT(ren, resampling=Resampling.nearest, **grid))
                if has_alpha
                else None
            )
            for y in range(0, dst.height, writer.block):
                rows = min(writer.block, dst.height - y)
                win = Window(0, y, dst.width, rows)
                rgb = colour.read([1, 2, 3], window=win)
                valid = reader.valid(win)
                if alpha_vrt is not None:
                    valid &= alpha_vrt.read(4, window=win) > 0
                rgb[:, ~valid] = 0
                writer.add(y, rgb, valid)
    writer.close()


def cog_options(creation_options: Mapping[str, str] | None = None) -> dict[str, str]:
    """COG driver options: 512 px tiles, DEFLATE with predictor, averaged overviews."""
    return formats.COG.options(creation_options)


def copy_to(
    fmt: OutputFormat, src: Path, dst: Path, creation_options: Mapping[str, str] | None = None
) -> None:
    """Copy a rendered GeoTIFF into ``fmt`` (a driver without Create: COG's overviews, tiles
    and header first)."""
    from rasterio.shutil import copy as rio_copy

    try:
        rio_copy(str(src), str(dst), driver=fmt.driver, **fmt.options(creation_options))
    except RasterioError as exc:
        raise OutputError(
            f"cannot write the {fmt.name} file ({one_line(exc)}); check --co options"
        ) from exc


def to_cog(src: Path, dst: Path, creation_options: Mapping[str, str] | None = None) -> None:
    """Copy a GeoTIFF into a Cloud Optimized GeoTIFF (overviews, tiles, header first)."""
    copy_to(formats.COG, src, dst, creation_options)


def check_suffix(dst: Path, driver: str) -> None:
    """OutputError unless OUT is named as the file it will be (``map.png`` would hold TIFF
    bytes that image viewers and GIS software then misread); see ``formats.check_suffix``."""
    formats.check_suffix(dst, formats.get(driver))


class _GdalWarnings(logging.Filter):
    """Takes the GDAL warnings rasterio forwards to its ``rasterio._env`` logger while the
    options are tried: they become the one-line error instead of log lines."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())
        return False


def check_creation_options(driver: str, creation_options: Mapping[str, str]) -> None:
    """InputError for a ``--co`` that GDAL would ignore (an unknown name, an unexpected value)
    or that is out of bounds (a numeric option outside its range in the format registry).

    Why: GDAL only warns and writes the file without it (``COMPRESS=BOGUS`` gives an
    uncompressed file), which ``--quiet`` hides. The bounds come first (a 65536 px block would
    be allocated by the trial itself); then a 16 px dataset in memory, made with the options,
    tells before anything is rendered; GDAL's own words name the option.
    """
    if not creation_options:
        return
    fmt = formats.render_format(driver)
    fmt.check_numbers(creation_options)
    gdal_log = logging.getLogger("rasterio._env")
    handler = _GdalWarnings()
    gdal_log.addFilter(handler)
    try:
        _trial_dataset(fmt, creation_options)
    except RasterioError as exc:
        memfile = r"\S*[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\S*:\s*"  # the trial's own name
        detail = re.sub(memfile, "", one_line(exc))
        raise InputError(f"--co {_co_text(creation_options)}: {detail}") from exc
    finally:
        gdal_log.removeFilter(handler)
    bad = [m for m in handler.messages if "creation option" in m or "not recognised" in m]
    if bad:
        detail = bad[0].split(" in ", 1)[-1] if bad[0].startswith("CPLE_") else bad[0]
        raise InputError(
            f"--co {_co_text(creation_options)}: {detail.rstrip('.')}; see the {fmt.driver} "
            f"driver's creation options (gdalinfo --format {fmt.driver})"
        )


def _trial_dataset(fmt: OutputFormat, creation_options: Mapping[str, str]) -> None:
    """Make a 16 px RGB dataset in memory with the options (through a copy where ``fmt`` has
    no Create, as :func:`copy_to` does)."""
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    profile = dict(width=16, height=16, count=3, dtype="uint8")
    base = formats.INTERMEDIATE
    with warnings.catch_warnings(), MemoryFile() as mem:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if fmt.copy:
            with MemoryFile() as src_mem, src_mem.open(driver=base.driver, **profile) as src:
                rio_copy(src, mem.name, driver=fmt.driver, **fmt.options(creation_options))
        else:
            with mem.open(driver=fmt.driver, **profile, **fmt.options(creation_options)):
                pass


def _co_text(creation_options: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in creation_options.items())


def render_creation_options(options: RenderOptions, native: bool) -> Mapping[str, str]:
    """User creation options apply to the file the user gets; intermediates (resampled to the
    input grid or copied into a format without Create afterwards) favour speed."""
    if not formats.render_format(options.driver).copy and not native:
        return options.creation_options
    return {"ZLEVEL": "1"}


@contextlib.contextmanager
def opened(ds: Any) -> Iterator[Any]:
    try:
        yield ds
    finally:
        ds.close()


@contextlib.contextmanager
def output_chain(
    dst: Path, options: RenderOptions, native: bool
) -> Iterator[tuple[Path, Callable[[Any, Any, Any], None]]]:
    """Where the tiles go and what turns that file into the output, all inside one atomic
    output: the temp file itself (a format with Create, at model GSD), or intermediates beside
    it (native grid, a ``copy`` format) that are removed whatever happens."""
    fmt = formats.render_format(options.driver)
    scratch: list[Path] = []
    try:
        with files.atomic_output(dst, options.overwrite) as tmp:
            if not native and not fmt.copy:
                yield tmp, lambda ds, plan, watch: None
                return
            render_path = files.temp_path(dst, "model")
            scratch.append(render_path)

            def finish(ds: Any, plan: Any, watch: Any) -> None:
                current = render_path
                if native:
                    target = files.temp_path(dst, "n") if fmt.copy else tmp
                    if target != tmp:
                        scratch.append(target)
                    co = {} if fmt.copy else options.creation_options
                    with opened(create_output(target, plan.native, plan.alpha, co)) as out:
                        resample_to_grid(current, out, ds, plan.bands, plan.aoi_native_px, watch)
                    current = target
                if fmt.copy:
                    tmp.unlink()
                    copy_to(fmt, current, tmp, options.creation_options)

            yield render_path, finish
    finally:
        for p in scratch:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
