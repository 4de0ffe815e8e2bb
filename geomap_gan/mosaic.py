"""Putting rendered files together: the VRT mosaic over many outputs (``render-many``'s
``mosaic.vrt``, ``render --strips map.vrt``) and the copy of Dask strips into one output.

The VRT is written as XML here rather than by GDAL's BuildVRT: rasterio (which bundles the GDAL
this package uses) does not expose BuildVRT, and the ``osgeo`` bindings are not a dependency
(where they exist they are another GDAL build, which must not be loaded beside rasterio's in one
process). What BuildVRT would add is not needed: all sources share a CRS (checked), and the
per-source mask compositing (``UseMaskBand``) is written out explicitly.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from geomap_gan import files, formats
from geomap_gan.errors import OutputError
from geomap_gan.rendering.grid import Grid

if TYPE_CHECKING:
    from geomap_gan.rendering.options import RenderOptions
    from geomap_gan.rendering.output import BlockRowWriter

log = logging.getLogger(__name__)

MOSAIC_NAME = "mosaic.vrt"
MOSAIC_KEY = "GEOMAP_GAN_MOSAIC"  # VRT metadata item that says this tool wrote the mosaic
_INTERP = ("Red", "Green", "Blue")


def is_own_mosaic(path: Path) -> bool:
    """Whether ``path`` is a VRT mosaic this tool wrote (it carries :data:`MOSAIC_KEY`): an
    index of outputs that a later run may bring up to date without ``--overwrite``."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith(b"<VRTDataset") and f'key="{MOSAIC_KEY}"'.encode() in head


def check_mosaic(
    vrt: Path, overwrite: bool, inputs: Sequence[str | Path] | files.InputFiles
) -> Path:
    """The mosaic path, checked before any work: never an input (or a file GDAL reads for one),
    and an existing file there is replaced only with ``overwrite``, unless it is a mosaic this
    tool wrote (:func:`is_own_mosaic`)."""
    return files.check_output(vrt, overwrite or is_own_mosaic(vrt), inputs, formats.VRT)


def build_mosaic(
    paths: Sequence[Path], vrt: Path, overwrite: bool = True
) -> tuple[Path | None, tuple[str, ...]]:
    """Write ``vrt`` over the outputs in ``paths`` that share the most common CRS (ties: the
    first output's); returns the VRT (None when there is nothing to mosaic) and the outputs left
    out (another CRS: a VRT mosaic cannot mix CRSs without warping, which would change pixels).
    """
    import rasterio

    if not paths:
        return None, ()
    crss = []
    for p in paths:
        with rasterio.open(p) as ds:
            crss.append(ds.crs)
    crs = max(crss, key=lambda c: (sum(c == d for d in crss), -crss.index(c)))
    same = [p for p, c in zip(paths, crss, strict=True) if c == crs]
    other = [p for p, c in zip(paths, crss, strict=True) if c != crs]
    if other:
        log.info(
            "%s covers the %d output(s) in %s; left out (another CRS): %s",
            vrt.name,
            len(same),
            crs,
            ", ".join(p.name for p in other),
        )
    write_vrt(same, vrt, overwrite)
    return vrt, tuple(str(p) for p in other)


def _source_lines(
    infos: list, vrt: Path, band: int, origin: tuple[float, float, float, float]
) -> list[str]:
    """The ``<ComplexSource>`` elements of one VRT band."""
    left, top, rx, ry = origin
    lines = []
    for p, w, h, t, _c, (by, bx) in infos:
        rel = os.path.relpath(p.absolute(), vrt.absolute().parent)
        source_band = str(band) if band <= 3 else "mask,1"
        x0, y0 = (t.c - left) / rx, (top - t.f) / ry
        xs, ys = w * abs(t.a) / rx, h * abs(t.e) / ry
        lines += [
            "    <ComplexSource>",
            f'      <SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>',
            f"      <SourceBand>{source_band}</SourceBand>",
            f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType="Byte" '
            f'BlockXSize="{bx}" BlockYSize="{by}"/>',
            f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
            f'      <DstRect xOff="{x0!r}" yOff="{y0!r}" xSize="{xs!r}" ySize="{ys!r}"/>',
            # colour: keep earlier sources where this one is masked; alpha: never lower it
            "      <UseMaskBand>true</UseMaskBand>" if band <= 3 else "      <NODATA>0</NODATA>",
            "    </ComplexSource>",
        ]
    return lines


def write_vrt(paths: Sequence[Path], vrt: Path, overwrite: bool = True) -> Path:
    """Write a GDAL VRT mosaic over same-CRS RGB(A) rasters: 3 colour bands plus an alpha band
    built from each source's mask (alpha band, internal mask or nodata), at the finest
    resolution of the sources, file names relative to the VRT. Where sources overlap, a later
    one covers an earlier one only where its mask says it is valid (``UseMaskBand``, GDAL 3.3+;
    the alpha sources treat 0 as nodata), so nodata collars do not punch holes into neighbours.
    Carries :data:`MOSAIC_KEY`. Written atomically; an existing ``vrt`` is replaced only with
    ``overwrite``."""
    import rasterio

    infos = []
    for p in paths:
        with rasterio.open(p) as ds:
            infos.append((p, ds.width, ds.height, ds.transform, ds.crs, ds.block_shapes[0]))
    rx = min(abs(t.a) for *_, t, _c, _b in infos)
    ry = min(abs(t.e) for *_, t, _c, _b in infos)
    left = min(t.c for *_, t, _c, _b in infos)
    top = max(t.f for *_, t, _c, _b in infos)
    right = max(t.c + w * abs(t.a) for _p, w, _h, t, _c, _b in infos)
    bottom = min(t.f - h * abs(t.e) for _p, _w, h, t, _c, _b in infos)
    width, height = round((right - left) / rx), round((top - bottom) / ry)
    crs = infos[0][4]
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    lines.append(f'  <Metadata><MDI key="{MOSAIC_KEY}">1</MDI></Metadata>')
    if crs is not None:
        lines.append(f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(crs.to_wkt())}</SRS>')
    lines.append(f"  <GeoTransform>{left!r}, {rx!r}, 0.0, {top!r}, 0.0, {-ry!r}</GeoTransform>")
    for band, interp in enumerate((*_INTERP, "Alpha"), start=1):
        lines.append(f'  <VRTRasterBand dataType="Byte" band="{band}">')
        lines.append(f"    <ColorInterp>{interp}</ColorInterp>")
        lines += _source_lines(infos, vrt, band, (left, top, rx, ry))
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    with files.atomic_output(vrt, overwrite) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return vrt


# ---- strips --------------------------------------------------------------------------------------
def publish_strips(work: Path, folder: Path, vrt: Path, overwrite: bool) -> None:
    """Give the finished strips folder ``work`` its final name ``folder`` and write ``vrt``
    over its strips. A ``folder`` already there (checked to be this tool's by
    ``files.check_output_folder``) is moved aside first and removed only once the new folder
    and the VRT are in place; if anything fails it is put back, so the earlier result stays
    whole."""
    old = None
    if folder.exists():
        if not files.made_here(folder):  # checked before the work; checked again now
            raise OutputError(f"{folder} was not made by geomap-gan; left as it is")
        old = files.temp_path(folder, "old")
        folder.rename(old)
    try:
        work.rename(folder)
        try:
            write_vrt(sorted(folder.glob("strip_*.tif")), vrt, overwrite)
        except BaseException:
            folder.rename(work)  # the scratch folder again: removed with it
            raise
    except BaseException:
        if old is not None:
            old.rename(folder)
        raise
    if old is not None:
        files.remove_made_dir(old)


def _copy_strip(
    path: Path, rows: tuple[int, int], grid: Grid, writer: BlockRowWriter, alpha: bool
) -> None:
    """Feed one strip file (output rows ``rows``) to the block-row writer."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    r0, r1 = rows
    with rasterio.open(path) as s:
        if (s.width, s.height) != (grid.width, r1 - r0):
            raise OutputError(
                f"strip {path.name} is {s.width}x{s.height} px, expected "
                f"{grid.width}x{r1 - r0}; the engine's row_range is inconsistent"
            )
        step = writer.block
        for y in range(0, s.height, step):
            win = Window(0, y, s.width, min(step, s.height - y))
            rgb = s.read([1, 2, 3], window=win)
            valid = s.read(4, window=win) > 0 if alpha else np.ones(rgb.shape[1:], dtype=bool)
            writer.add(r0 + y, rgb, valid)


def assemble_strips(
    paths: Sequence[Path], strips: Sequence[tuple[int, int]], dst: Path, options: RenderOptions
) -> Path:
    """Copy strip files (rows ``strips[k]`` of the output each) into one output at ``dst``,
    whole block rows at a time (the engine's BlockRowWriter), then into the output format when
    it needs a copy step (COG); ``dst`` appears only when complete."""
    import rasterio

    from geomap_gan.rendering import output

    fmt = formats.render_format(options.driver)
    with rasterio.open(paths[0]) as first:
        alpha = first.count == 4
        grid = Grid(first.width, strips[-1][1], first.transform, first.crs)
    co = {} if fmt.copy else options.creation_options
    with files.atomic_output(dst, options.overwrite) as tmp:
        target = files.temp_path(dst, "strips") if fmt.copy else tmp
        try:
            out = output.create_output(target, grid, alpha, co)
            try:
                writer = output.BlockRowWriter(out)
                for path, rows in zip(paths, strips, strict=True):
                    _copy_strip(path, rows, grid, writer, alpha)
                writer.close()
            finally:
                out.close()
            if fmt.copy:
                tmp.unlink()
                output.copy_to(fmt, target, tmp, options.creation_options)
        finally:
            if target != tmp:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
    return dst
