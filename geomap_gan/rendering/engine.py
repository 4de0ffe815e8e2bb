"""The render engine's orchestrator: a georeferenced scene in, a map-style RGB GeoTIFF on the
same footprint out. It wires the stages, each in its own module and importing only those below:

    options   RenderOptions, RenderResult (what the user asks, what comes back)
    scene     open + validate, bands, ground scale, render grid on the CRS lattice (WarpedVRT)
    reader    8-bit stretch, radiometric harmonisation, reflect-padded windowed reads
    inference the tile runner (BatchNorm folded, bf16, compile policy) and batch sizes
    pipeline  reader thread -> model -> blend accumulator -> writer thread, bounded queues
    output    GTiff/COG output, block-row writer, resampling to the input grid, atomic chain

Windows come from :func:`tile_grid`: for a model with a bounded receptive field (its card says
how far), large core windows on the CRS lattice whose margins are dropped, so each pixel is
computed from content the model sees whole; else 256 px windows blended over an overlap.
The CLI and the QGIS plugin call :func:`render`; it reports ``progress(done, total)`` in windows,
stops with :class:`RenderCancelled` when ``cancel()`` returns True, and leaves the process's
state (threads, allocator) to its owner (``device.configure_process``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from geomap_gan import files
from geomap_gan.errors import InputError
from geomap_gan.model.modelfile import MapModel, ModelCard, load_model
from geomap_gan.model.registry import architecture
from geomap_gan.rendering import output, reader, scene
from geomap_gan.rendering.blend import grid_weights
from geomap_gan.rendering.grid import Grid, model_grid
from geomap_gan.rendering.inference import TileRunner, batch_size_for
from geomap_gan.rendering.options import (
    Cancel,
    EngineSettings,
    Progress,
    RenderOptions,
    RenderResult,
    Status,
)
from geomap_gan.rendering.output import opened, output_chain, render_creation_options
from geomap_gan.rendering.pipeline import ProgressCounter, run_tiles
from geomap_gan.rendering.radiometry import (
    DOMAIN_WARNING_LEVELS,
    channel_quantiles,
    domain_distance,
    harmonizing_lut,
)
from geomap_gan.rendering.resample import render_source
from geomap_gan.rendering.windows import (
    AoiFilter,
    TileGrid,
    column_panels,
    fitting_window,
    lattice_phase,
    panel_columns,
    round_up,
    window_rows,
)

if TYPE_CHECKING:
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from shapely.geometry.base import BaseGeometry

    from geomap_gan.rendering.grid import Grid
    from geomap_gan.rendering.reader import Stretch

log = logging.getLogger(__name__)


@dataclass
class ScenePlan:
    """Everything decided before the first window is read."""

    grid: Grid  # of the render
    native: Grid  # of the input
    bands: tuple[int, int, int]
    stretch: Stretch | None
    scene_gsd: float | None
    gsd: float | None
    aoi_px: BaseGeometry | None  # AOI in render-grid pixels
    aoi_native_px: BaseGeometry | None  # AOI in input-grid pixels
    alpha: bool
    rows: tuple[int, int]  # render-grid rows [start, stop) to write
    lut: np.ndarray | None = None  # (3, 256) radiometric harmonisation, or None
    domain_distance: float | None = None  # grey levels from the training aerials (radiometry)

    @property
    def part(self) -> Grid:
        """The render grid restricted to ``rows`` (the whole grid unless rendering a strip)."""
        from affine import Affine

        from geomap_gan.rendering.grid import Grid

        start, stop = self.rows
        g, t = self.grid, self.grid.transform
        shifted = Affine(t.a, t.b, t.c + t.b * start, t.d, t.e, t.f + t.e * start)
        return Grid(g.width, stop - start, shifted, g.crs)


def plan_scene(
    ds: rasterio.DatasetReader,
    card: ModelCard,
    options: RenderOptions,
    engine: EngineSettings | None = None,
    stats: bool = True,
) -> ScenePlan:
    """Validate the scene against the options and decide the grids, bands, AOI and 8-bit
    scaling (``stats=False`` skips the percentile statistics, the only reads of pixel data)."""
    from geomap_gan.rendering.aoi import aoi_to_pixels, parse_aoi

    engine = engine or EngineSettings()
    options.validate(card.tile_size)
    engine.validate(options)
    georef = scene.check_georeferencing(ds, options.allow_ungeoreferenced)
    bands = scene.select_bands(ds, options.bands)
    native = Grid(ds.width, ds.height, ds.transform, ds.crs if georef else None)
    model_gsd = options.gsd or card.gsd
    gsd: float | None = model_gsd
    if georef:
        grid, scene_gsd = model_grid(ds, model_gsd, options.max_upscale)
    else:
        grid, scene_gsd, gsd = native, None, None
    aoi_px = aoi_native_px = None
    if options.aoi is not None:
        geom, crs = parse_aoi(options.aoi, options.aoi_crs)
        aoi_px = aoi_to_pixels(geom, crs, grid)
        if options.output_res == "native":
            aoi_native_px = aoi_to_pixels(geom, crs, native)
    uint8 = np.dtype(ds.dtypes[bands[0] - 1]) == np.uint8
    training = np.asarray(card.input_quantiles, dtype=np.float64)
    sample = None
    if stats:  # always: a scene with no valid pixel is an error whatever its type and model
        sample = reader.sample_pixels(ds, bands)
    if options.scale is not None:
        stretch = reader.fixed_stretch(options.scale)
    elif sample is not None and not uint8:
        stretch = reader.percentile_stretch(sample, options.percentiles)
    else:
        stretch = None
    lut, distance = None, None
    if sample is not None and training.shape == (3, 21):
        eight_bit = stretch.apply(sample[:, None, :])[:, 0] if stretch else np.clip(sample, 0, 255)
        scene_q = channel_quantiles(eight_bit)
        distance = domain_distance(scene_q, training)
        if options.harmonize:
            lut = harmonizing_lut(scene_q, training)
    alpha = scene.may_be_invalid(ds) or options.aoi is not None
    rows = engine.row_range or (0, grid.height)
    if rows[1] > grid.height:
        raise InputError(f"row_range {rows} goes past the render grid's {grid.height} rows")
    return ScenePlan(grid, native, bands, stretch, scene_gsd, gsd, aoi_px, aoi_native_px, alpha,
                     rows, lut, distance)  # fmt: skip


def region_reader(
    stack: contextlib.ExitStack,
    ds: rasterio.DatasetReader,
    plan: ScenePlan,
    name: str,
    threads: int = 1,
    watch: scene.CorruptionWatch | None = None,
) -> reader.RegionReader:
    """The scene read as the renderer reads it: resampled to the plan's grid (in ``threads``),
    its bands, 8-bit stretch and harmonisation; the resampled view closed with ``stack``."""
    source = render_source(ds, plan.grid, threads)
    if source is not ds:
        stack.enter_context(source)
    return reader.RegionReader(source, plan.bands, plan.stretch, name, watch, plan.lut)


@dataclass(frozen=True)
class RenderPlan:
    """The render grid of a scene and its windows, decided without reading pixels or running
    the model: for progress bars and for splitting one scene into strips
    (``EngineSettings.row_range``)."""

    width: int  # render grid, pixels
    height: int
    transform: tuple[float, ...]
    crs: str | None
    gsd: float | None  # metres per render-grid pixel
    scene_gsd: float | None  # metres per input pixel
    tile: int
    overlap: int
    window_rows: tuple[int, ...]  # top row of each window row (may be negative)
    windows_per_row: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def windows(self) -> int:
        return len(self.window_rows) * self.windows_per_row

    def strips(self, n: int) -> list[tuple[int, int]]:
        """Split the grid rows into at most ``n`` strips ``[start, stop)`` that start where a
        window row starts (so neighbouring strips share one window row of work)."""
        rows = len(self.window_rows)
        cuts = {0, self.height}
        for i in range(1, max(1, n)):
            k = round(i * rows / n)
            if 0 < k < rows:
                cuts.add(min(max(self.window_rows[k], 0), self.height))
        edges = sorted(cuts)
        return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


@dataclass(frozen=True)
class _SizeOnly:
    """A grid of a size only (no georeferencing): what tile_grid needs to size windows."""

    width: int
    height: int
    transform: Affine | None = None
    crs: CRS | None = None


_LARGE_GRID = _SizeOnly(16384, 16384)


def prepare_compiled(
    model: MapModel | str | Path | None = None, options: RenderOptions | None = None
) -> bool:
    """Build now, on this machine's CPU, the compiled generator that render() with ``options``
    would use there (or find it cached), so that no render pays the 10-20 s build. True when it
    is ready; False when it cannot be built (renders then run eagerly)."""
    options = options or RenderOptions()
    device = torch.device("cpu")
    mapmodel = load_model(model, device)
    options.validate(mapmodel.card.tile_size)
    tiles = tile_grid(mapmodel.card, options, _LARGE_GRID)  # the windows of a large scene
    weights = grid_weights(tiles)
    batch = batch_size_for(options, device, tiles.tile)
    return TileRunner(mapmodel, device, options.amp, weights, batch, compile=True).compiled


def tile_grid(card: ModelCard, options: RenderOptions, grid: Grid | _SizeOnly) -> TileGrid:
    """The windows of a render: for a model with a bounded receptive field (in its card), core
    windows of ``options.window`` px (or one window that fits a small scene) whose margins, the
    receptive field rounded up to the network's stride, are computed and dropped; otherwise
    ``tile_size`` windows blended over ``options.overlap``."""
    if card.receptive_field <= 0:
        return TileGrid.over(grid.width, grid.height, card.tile_size, options.overlap)
    multiple = architecture(card.arch).stride(card)
    margin = round_up(card.receptive_field, multiple)
    phase = (0, 0)
    if grid.crs is not None and grid.transform is not None:
        phase = lattice_phase(grid.transform, multiple)
    window = max(round_up(options.window, multiple), 2 * margin + multiple)
    fits = max(
        fitting_window(grid.width, margin, phase[0], multiple),
        fitting_window(grid.height, margin, phase[1], multiple),
    )
    window = min(window, fits)
    return TileGrid.cores(grid.width, grid.height, window, margin, phase, multiple)


def plan_render(
    src: str | Path,
    model: MapModel | ModelCard | str | Path | None = None,
    options: RenderOptions | None = None,
) -> RenderPlan:
    """Validate ``src`` against ``options`` (same errors as :func:`render`) and return its
    render grid and windows without rendering."""
    import rasterio

    options = options or RenderOptions()
    if isinstance(model, MapModel):
        card = model.card
    elif isinstance(model, ModelCard):
        card = model
    else:
        card = load_model(model, "cpu").card
    with rasterio.Env(), scene.open_raster(src) as ds:
        plan = plan_scene(ds, card, options, stats=False)
    tiles = tile_grid(card, options, plan.grid)
    return RenderPlan(
        width=plan.grid.width,
        height=plan.grid.height,
        transform=tuple(plan.grid.transform)[:6],
        crs=plan.grid.crs.to_string() if plan.grid.crs else None,
        gsd=plan.gsd,
        scene_gsd=plan.scene_gsd,
        tile=tiles.tile,
        overlap=options.overlap,
        window_rows=tiles.ys,
        windows_per_row=len(tiles.xs),
    )


def render(
    src: str | Path,
    dst: str | Path,
    model: MapModel | str | Path | None = None,
    options: RenderOptions | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    engine: EngineSettings | None = None,
    status: Status | None = None,
) -> RenderResult:
    """Render the scene ``src`` into a map-style RGB(A) GeoTIFF ``dst``.

    ``model`` is a loaded :class:`MapModel`, a model file path, or None for the bundled default.
    The output has the input's CRS and footprint, at the model's GSD (or the input's grid with
    ``output_res="native"``), an alpha band where the input has nodata or an AOI is given, and
    appears only when complete (temp file + rename). Raises a GeomapGanError subclass for
    anything the user can fix, RenderCancelled when ``cancel()`` returns True. ``engine``: the
    engine's internal knobs (a strip of rows for Dask, read-ahead, panels, GDAL cache).
    ``status(text)`` hears of a long step that is not windows, before ``progress`` starts: the
    first large render on a machine builds the compiled generator (10-20 s).
    """
    import rasterio

    from geomap_gan.device import resolve_device

    options = options or RenderOptions()
    engine = engine or EngineSettings()
    start = time.perf_counter()
    env = rasterio.Env(
        GDAL_CACHEMAX=engine.gdal_cache_mb,
        GDAL_ERROR_ON_LIBJPEG_WARNING=True,
        GDAL_NUM_THREADS=str(engine.gdal_threads),  # GTiff block decoding and compression
    )
    with env, scene.watch_corruption() as watch, contextlib.ExitStack() as stack:
        ds = stack.enter_context(scene.open_raster(src))
        # once the scene is open: its files (a VRT's sources, sidecars) are inputs too
        dst_path = files.check_output(dst, options.overwrite, files.gdal_files(src, ds))
        output.check_suffix(dst_path, options.driver)
        output.check_creation_options(options.driver, options.creation_options)
        device = resolve_device(options.device)
        mapmodel = load_model(model, device)
        plan = plan_scene(ds, mapmodel.card, options, engine)
        watch.check(str(src))
        tiles = tile_grid(mapmodel.card, options, plan.grid)
        tile = tiles.tile
        options = replace(options, batch_size=batch_size_for(options, device, tile, len(tiles)))
        region = region_reader(stack, ds, plan, str(src), engine.gdal_threads, watch)
        weights = grid_weights(tiles)
        warnings = _domain_warnings(plan, options)
        for w in warnings:  # before a compile step's status line takes the terminal's last line
            log.warning("%s: %s", src, w)
        generator = TileRunner(mapmodel, device, options.amp, weights, options.batch_size,
                               options.compile, len(tiles), status)  # fmt: skip
        aoi = AoiFilter(plan.aoi_px) if plan.aoi_px is not None else None
        native = options.output_res == "native" and plan.grid != plan.native
        rows = window_rows(tiles, *plan.rows)
        rendered = skipped = 0
        with output_chain(dst_path, options, native) as (render_path, final_step):
            out = output.create_output(
                render_path, plan.part, plan.alpha, render_creation_options(options, native)
            )
            with opened(out):
                panels = column_panels(tiles.width, engine.panel_width, out.block_shapes[0][1])
                total = sum(len(panel_columns(tiles, *p)) for p in panels) * len(rows)
                distinct = len(tiles.xs) * len(rows)
                log.info(
                    "%s", _describe_plan(src, ds, plan, tiles, (total, distinct), options, device)
                )
                counter = ProgressCounter(total, progress, cancel)
                for panel in panels:
                    writer = output.BlockRowWriter(out, plan.aoi_px, plan.rows[0], panel)
                    n, k = run_tiles(generator, region, writer, tiles, rows, panel, aoi,
                                     options, counter, engine.prefetch)  # fmt: skip
                    rendered, skipped = rendered + n, skipped + k
            final_step(ds, plan, watch)
    return _result(dst_path, plan, native, (rendered, skipped), start, warnings, generator)


def _result(
    dst_path: Path,
    plan: ScenePlan,
    native: bool,
    windows: tuple[int, int],
    start: float,
    warnings: list[str],
    generator: TileRunner,
) -> RenderResult:
    """What a finished render reports: the output grid, the windows rendered and skipped, the
    time since ``start`` (perf_counter), how the generator ran."""
    out_grid = plan.native if native else plan.part
    seconds = time.perf_counter() - start
    result = RenderResult(
        path=dst_path,
        width=out_grid.width,
        height=out_grid.height,
        crs=out_grid.crs.to_string() if out_grid.crs else None,
        transform=tuple(out_grid.transform)[:6],
        gsd=(plan.scene_gsd if native else plan.gsd),
        scene_gsd=plan.scene_gsd,
        megapixels=plan.part.megapixels,
        windows=windows[0],
        windows_skipped=windows[1],
        seconds=seconds,
        domain_distance=plan.domain_distance,
        warnings=tuple(warnings),
        generator="compiled" if generator.compiled else "eager",
        compile_seconds=generator.build_seconds,
    )
    log.debug(  # the CLI prints its own summary: -v would show this twice
        "wrote %s: %dx%d px, %d windows (%d skipped) in %.1f s, %.2f MP/s",
        dst_path,
        result.width,
        result.height,
        *windows,
        seconds,
        result.megapixels_per_second,
    )
    return result


def _describe_plan(
    src: object,
    ds: rasterio.DatasetReader,
    plan: ScenePlan,
    tiles: TileGrid,
    runs: tuple[int, int],
    options: RenderOptions,
    device: torch.device,
) -> str:
    """The -v line that says what the render will do. ``runs``: (window runs, distinct windows);
    each column panel (EngineSettings.panel_width, which bounds memory on wide scenes) runs the
    windows that straddle its edges again, and the progress bar and the summary count runs."""
    total, distinct = runs
    again = "" if total == distinct else f" ({distinct} distinct; those on panel edges run twice)"
    scene_gsd = f"{plan.scene_gsd:.3g}" if plan.scene_gsd else "?"
    gsd = f"{plan.gsd:.3g}" if plan.gsd else "?"
    return (
        f"{src}: {ds.width}x{ds.height} px, bands {','.join(map(str, plan.bands))}, {scene_gsd} "
        f"m/px -> render grid {plan.grid.width}x{plan.grid.height} px at {gsd} m/px, {total} "
        f"windows of {tiles.tile} px{again} (overlap {options.overlap}, margin {tiles.margin}), "
        f"device {device}"
    )


def _domain_warnings(plan: ScenePlan, options: RenderOptions) -> list[str]:
    """One line when the scene's colours are far from the training aerials', with what to try."""
    d = plan.domain_distance
    if d is None or d <= DOMAIN_WARNING_LEVELS:
        return []
    tips = "check --bands and --scale"
    if not options.harmonize:
        tips += "; for a hazy or over-exposed scene try --harmonize"
    return [
        f"the scene's colours are far from the model's training aerials ({d:.0f} grey levels "
        f"apart, over {DOMAIN_WARNING_LEVELS:.0f} is unusual): read the map as a sketch; {tips}"
    ]
