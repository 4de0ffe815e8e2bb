"""The render engine: a georeferenced scene in, a map-style RGB GeoTIFF on the same footprint out.

One orchestrator, data flowing one way::

    open + validate scene -> render grid at the model's GSD (WarpedVRT) -> windows (tiling)
      -> reader thread: reflect-padded 8-bit reads, skip all-nodata / outside-AOI windows
      -> main thread: batches through the generator (eval, inference mode, bf16, channels_last)
      -> blend accumulator (finished rows) -> writer thread: whole block rows to a temp GeoTIFF
      -> optional resample to the input grid / COG copy -> atomic rename onto the output

Reading, inference and writing overlap through two bounded queues, so the device never waits on
GDAL and memory is bounded by the window rows in flight, not by the scene. The CLI and the QGIS
plugin call :func:`render`; it reports ``progress(done, total)`` in windows and stops with
:class:`RenderCancelled` when ``cancel()`` returns True.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from . import files
from .blend import StripAccumulator, grid_weights
from .data import to_model_range
from .errors import InputError, RenderCancelled
from .modelfile import MapModel, ModelCard, load_model
from .radiometry import DOMAIN_WARNING_LEVELS, channel_quantiles, domain_distance, harmonizing_lut
from .raster import one_line
from .tiling import AoiFilter, TileGrid, TileWindow, fitting_window

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
_END = object()  # end-of-stream marker in the queues
_POLL_S = 0.1  # seconds between checks of the stop flag while a queue is full or empty
# Building the compiled generator costs 10-20 s once per model and machine (aot.py caches it;
# loading it then takes about 0.01 s) and saves about 45% per window on CPU: worth building
# from this many windows (100 MP at the defaults); a library already cached is used for any
# scene.
COMPILE_MIN_WINDOWS = 2000
# Windows per forward pass when RenderOptions.batch_size is 0. On CPU, batch 4 ran the compiled
# ngf=32 U-Net at 3.5 ms/window against 4.3 at batch 8 (same process, interleaved) and eager at
# the same speed as 8; GPUs want larger batches.
AUTO_BATCH = {"cpu": 4, "cuda": 16, "mps": 8}
# Memory a batch may take: the U-Net's activations are about ACTIVATION_BYTES_PER_PIXEL per
# window pixel (ngf=32, fp32 eager, measured peak over input size), so --batch-size 100000 on a
# one-window scene no longer asks for 19.6 GB.
BATCH_MEMORY_BYTES = 4 * 2**30
ACTIVATION_BYTES_PER_PIXEL = 1000


@dataclass(frozen=True)
class RenderOptions:
    """How to render. Units: pixels of the render grid, metres per pixel for ``gsd``.

    ``bands`` are 1-based (red, green, blue); None: from the colour interpretation, else 1,2,3.
    ``scale`` (min, max) maps input values linearly to 0..255; None: uint8 as is, other types by a
    per-band 2-98 percentile stretch over the scene. ``gsd`` overrides the model card's input GSD.
    ``output_res``: ``model`` writes at the model's GSD, ``native`` at the input's pixel grid.
    ``aoi``: polygon(s) as GeoJSON/WKT text, a file holding either, or a shapely geometry, in
    ``aoi_crs`` (default: the CRS named in it, else EPSG:4326). ``creation_options`` are GDAL
    creation options of the output driver (``--co``).
    """

    overlap: int = 32  # blended windows only (models without a bounded receptive field)
    window: int = 1024  # window side for bounded-receptive-field models (see tile_grid)
    batch_size: int = 0  # windows per forward pass; 0: AUTO_BATCH for the device
    device: str = "auto"
    amp: bool = True
    bands: tuple[int, ...] | None = None
    scale: tuple[float, float] | None = None
    gsd: float | None = None
    output_res: Literal["model", "native"] = "model"
    aoi: Any = None
    aoi_crs: str | None = None
    driver: Literal["GTiff", "COG"] = "GTiff"
    creation_options: Mapping[str, str] = field(default_factory=dict)
    harmonize: bool = False  # map the scene's per-channel distribution onto the training one
    overwrite: bool = False
    allow_ungeoreferenced: bool = False
    percentiles: tuple[float, float] = (2.0, 98.0)
    max_upscale: float = 16.0  # refuse to enlarge a scene more than this to reach the model GSD
    prefetch: int = 3  # batches read ahead of the model
    gdal_cache_mb: int = 16  # GDAL block cache: reads are block-aligned, so a small one does
    row_range: tuple[int, int] | None = None  # render-grid rows [start, stop) only (strips)
    compile: bool | None = None  # compiled generator (aot.py); None: where it pays, see _Generator
    panel_width: int = 4096  # render-grid columns per pass (bounds memory on wide scenes; 0: all)
    threads: int = 0  # torch CPU threads (0: one per core on CPU, ACCELERATOR_CPU_THREADS on GPU)

    def validate(self, tile: int) -> None:
        """InputError for values that cannot work with a model of ``tile`` pixel windows."""
        if not 0 <= self.overlap < tile:
            raise InputError(f"--overlap must be 0 to {tile - 1} pixels, got {self.overlap}")
        if not 64 <= self.window <= 8192:
            raise InputError(f"--window must be 64 to 8192 pixels, got {self.window}")
        if self.threads < 0:
            raise InputError(f"--threads must be 0 (auto) or more, got {self.threads}")
        if self.panel_width < 0:
            raise InputError(f"panel_width must be 0 (whole width) or more, got {self.panel_width}")
        if self.batch_size < 0:
            raise InputError(f"--batch-size must be 0 (auto) or more, got {self.batch_size}")
        if self.gsd is not None and not self.gsd > 0:
            raise InputError(f"--gsd must be a positive number of metres, got {self.gsd}")
        if self.output_res not in ("model", "native"):
            raise InputError(f"--output-res must be model or native, got {self.output_res!r}")
        if self.driver not in ("GTiff", "COG"):
            raise InputError(f"--format must be GTiff or COG, got {self.driver!r}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise InputError(f"percentiles must satisfy 0 <= low < high <= 100, got {lo}, {hi}")
        if self.row_range is not None:
            start, stop = self.row_range
            if not 0 <= start < stop:
                raise InputError(f"row_range must be 0 <= start < stop, got {self.row_range}")
            if self.output_res == "native":
                raise InputError("row_range renders strips of the model grid; use output_res model")


@dataclass(frozen=True)
class RenderResult:
    """What a render wrote. ``width``/``height``/``crs``/``transform``/``gsd`` describe the
    output file; ``megapixels`` is the input at the model's GSD (the render grid)."""

    path: Path
    width: int
    height: int
    crs: str | None
    transform: tuple[float, ...]
    gsd: float | None  # ground metres per output pixel (None when ungeoreferenced)
    scene_gsd: float | None  # ground metres per input pixel
    megapixels: float
    windows: int  # windows run through the model
    windows_skipped: int  # windows outside the AOI or all nodata
    seconds: float
    domain_distance: float | None = None  # grey levels from the training aerials (radiometry)
    warnings: tuple[str, ...] = ()

    @property
    def megapixels_per_second(self) -> float:
        return self.megapixels / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Item:
    """One window from the reader: its tile and mask, or None when skipped."""

    window: TileWindow
    tile: np.ndarray | None = None  # (3, T, T) uint8
    valid: np.ndarray | None = None  # (T, T) bool


class _Worker(threading.Thread):
    """A daemon thread that keeps the exception that ended it, for the main thread to re-raise."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # handed to the main thread
            self.error = exc


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put, waiting while the queue is full; False if ``stop`` was set meanwhile."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _put_checked(q: queue.Queue, item: object, consumer: _Worker) -> None:
    """Put, waiting while the queue is full; re-raises the consumer's error if it died."""
    while True:
        try:
            q.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            if consumer.error is not None:
                raise consumer.error from None
            if not consumer.is_alive():
                raise RuntimeError(f"{consumer.name} thread ended without finishing") from None


def _get(q: queue.Queue, worker: _Worker) -> object:
    """Get, waiting while the queue is empty; re-raises the producer's error if it died."""
    while True:
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            if worker.error is not None:
                raise worker.error from None
            if not worker.is_alive():
                raise RuntimeError(f"{worker.name} thread ended without finishing") from None


class _TileNet(torch.nn.Module):
    """uint8 tiles in, blend-weighted grey levels out, as one module: compiled, the scaling in
    and the clamp, scaling and weighting out fuse into the network's first and last kernels."""

    def __init__(
        self, generator: torch.nn.Module, weights: torch.Tensor, device: torch.device, amp: bool
    ) -> None:
        super().__init__()
        self.generator = generator
        self.register_buffer("weights", weights)
        self.device, self.amp = device, amp

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, T) uint8 -> (B, 3, T, T) float32 grey levels x blend weights."""
        x = to_model_range(tiles.contiguous(memory_format=torch.channels_last))
        if self.amp:  # bf16 where native (decided by device.bf16_supported, outside the graph)
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                y = self.generator(x)
        else:
            y = self.generator(x)
        return y.float().clamp(-1.0, 1.0).add(1.0).mul(127.5).mul(self.weights).contiguous()


class _Generator:
    """The model on its device: uint8 tiles in, blend-weighted float tiles out.

    BatchNorm is folded into the convolutions (eval mode). Compiled, the network runs on CPU as an
    ahead-of-time compiled library from the cache of :mod:`geomap_gan.aot` (built on first use),
    elsewhere (or where this torch has no AOTInductor) through torch.compile, and every batch is
    padded to ``batch_size`` (static shapes). Whatever fails in compiling falls back to eager
    mode. ``compile``: True always, False never, None where it pays, on CPU: a library is already
    cached, or the scene has ``COMPILE_MIN_WINDOWS`` windows or more. (On a GPU the engine waits
    on GDAL, not on the network.)
    """

    def __init__(
        self,
        model: MapModel,
        device: torch.device,
        amp: bool,
        weights: np.ndarray,
        batch_size: int,
        compile: bool | None = False,
        windows: int = 0,
    ) -> None:
        from .device import bf16_supported
        from .nets import fuse_batchnorm

        generator = fuse_batchnorm(model.generator.eval()).to(memory_format=torch.channels_last)
        amp = amp and bf16_supported(device)
        self.eager = _TileNet(generator, torch.from_numpy(weights), device, amp).to(device)
        self.net: Callable[[torch.Tensor], torch.Tensor] = self.eager
        self.device = device
        self.batch_size = batch_size
        self.compiled = False
        if compile is not False:
            pixels = windows * len(weights) ** 2  # as many pixels as COMPILE_MIN_WINDOWS of 256
            big = pixels >= COMPILE_MIN_WINDOWS * 256**2
            worth_it = compile is True or (device.type == "cpu" and big)
            self.compiled = self._compile(len(weights), build=worth_it)

    def _compile(self, tile: int, build: bool) -> bool:
        """Switch to a compiled network: on CPU a cached AOT library (built when ``build``),
        elsewhere, or where this torch has no AOTInductor, torch.compile in this process."""
        from . import aot

        if self.device.type == "cpu":
            example = torch.zeros((self.batch_size, 3, tile, tile), dtype=torch.uint8)
            compiled = aot.load_or_build(self.eager, example, build)
            if compiled is not None:
                self.net = compiled
                return True
        if build and (self.device.type != "cpu" or not aot.available()):
            import torch._inductor.config as inductor_config

            jit = torch.compile(self.eager, dynamic=False)

            def run(x: torch.Tensor) -> torch.Tensor:
                # inductor reads its settings when (re)compiling, at a call: scoped to these
                with inductor_config.patch(aot.INDUCTOR_OPTIONS):
                    return jit(x)

            self.net = run
            return True
        return False

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.compiled:
            return self.net(x)
        try:
            return self.net(x)
        except Exception as exc:  # inductor raises many types; eager always works
            log.warning("compiled generator failed (%s); rendering in eager mode", one_line(exc))
            self.net, self.compiled = self.eager, False
            return self.net(x)

    @torch.inference_mode()
    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """(B, 3, T, T) uint8 -> (B, 3, T, T) float32 grey levels x blend weights."""
        n = len(tiles)
        if self.compiled and n < self.batch_size:
            pad = np.zeros((self.batch_size - n, *tiles.shape[1:]), tiles.dtype)
            return self(np.concatenate([tiles, pad]))[:n]
        x = torch.from_numpy(tiles).to(self.device, non_blocking=True)
        return self._forward(x).cpu().numpy()


@dataclass
class _Plan:
    """Everything decided before the first window is read."""

    grid: Any  # raster.Grid of the render
    native: Any  # raster.Grid of the input
    bands: tuple[int, int, int]
    stretch: Any  # raster.Stretch | None
    scene_gsd: float | None
    gsd: float | None
    aoi_px: Any  # AOI in render-grid pixels, or None
    aoi_native_px: Any  # AOI in input-grid pixels, or None
    alpha: bool
    rows: tuple[int, int]  # render-grid rows [start, stop) to write
    lut: np.ndarray | None = None  # (3, 256) radiometric harmonisation, or None
    domain_distance: float | None = None  # grey levels from the training aerials (radiometry)

    @property
    def part(self) -> Any:
        """The render grid restricted to ``rows`` (the whole grid unless rendering a strip)."""
        from affine import Affine

        from .raster import Grid

        start, stop = self.rows
        g, t = self.grid, self.grid.transform
        shifted = Affine(t.a, t.b, t.c + t.b * start, t.d, t.e, t.f + t.e * start)
        return Grid(g.width, stop - start, shifted, g.crs)


def _plan(ds: Any, card: ModelCard, options: RenderOptions, stats: bool = True) -> _Plan:
    """Validate the scene against the options and decide the grids, bands, AOI and 8-bit
    scaling (``stats=False`` skips the percentile statistics, the only reads of pixel data)."""
    from . import raster
    from .aoi import aoi_to_pixels, parse_aoi

    options.validate(card.tile_size)
    georef = raster.check_georeferencing(ds, options.allow_ungeoreferenced)
    bands = raster.select_bands(ds, options.bands)
    native = raster.Grid(ds.width, ds.height, ds.transform, ds.crs if georef else None)
    gsd = options.gsd or card.gsd
    if georef:
        grid, scene_gsd = raster.model_grid(ds, gsd, options.max_upscale)
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
    if stats and ((options.scale is None and not uint8) or training.shape == (3, 21)):
        sample = raster.sample_pixels(ds, bands)
    if options.scale is not None:
        stretch = raster.fixed_stretch(options.scale)
    elif sample is not None and not uint8:
        stretch = raster.percentile_stretch(sample, options.percentiles)
    else:
        stretch = None
    lut, distance = None, None
    if sample is not None and training.shape == (3, 21):
        eight_bit = stretch.apply(sample[:, None, :])[:, 0] if stretch else np.clip(sample, 0, 255)
        scene_q = channel_quantiles(eight_bit)
        distance = domain_distance(scene_q, training)
        if options.harmonize:
            lut = harmonizing_lut(scene_q, training)
    alpha = raster.has_nodata_mask(ds) or options.aoi is not None
    rows = options.row_range or (0, grid.height)
    if rows[1] > grid.height:
        raise InputError(f"row_range {rows} goes past the render grid's {grid.height} rows")
    return _Plan(grid, native, bands, stretch, scene_gsd, gsd, aoi_px, aoi_native_px, alpha, rows,
                 lut, distance)  # fmt: skip


def _read_windows(
    reader: Any,
    tiles: TileGrid,
    rows: range,
    cols: range,
    aoi: AoiFilter | None,
    out: queue.Queue,
    stop: threading.Event,
) -> None:
    """Reader thread: the windows of grid rows ``rows`` and columns ``cols`` in row-major order,
    each as a tile or a skip marker. The wanted windows of a row are read as one region (one
    GDAL read per window row; the tiles are views into it)."""
    size = tiles.tile
    busy = 0.0
    for r in rows:
        y = tiles.ys[r]
        row = [TileWindow(tiles.xs[c], y, size, r, c) for c in cols]
        wanted = [aoi is None or aoi.touches(w, tiles.width, tiles.height) for w in row]
        region = None
        if any(wanted):
            first = row[wanted.index(True)]
            last = row[len(wanted) - 1 - wanted[::-1].index(True)]
            t0 = time.thread_time()
            region = (first.x, reader.read(first.x, y, last.x + size - first.x, size))
            busy += time.thread_time() - t0
        for w, want in zip(row, wanted, strict=True):
            item = _Item(w)
            if want and region is not None:
                x0, (rgb, valid) = region
                v = valid[:, w.x - x0 : w.x - x0 + size]
                if v.any():
                    item = _Item(w, rgb[:, :, w.x - x0 : w.x - x0 + size], v)
            if not _put(out, item, stop):
                return
    log.debug("reader thread: reading %.1f s CPU", busy)
    _put(out, _END, stop)


def _write_strips(writer: Any, strips: queue.Queue, stop: threading.Event) -> None:
    """Writer thread: strips until the end marker, then the last partial block row (unless the
    render was stopped, when the file is discarded anyway)."""
    busy = 0.0
    while True:
        strip = strips.get()
        if strip is _END:
            break
        t0 = time.thread_time()
        writer.add(strip.y, strip.rgb, strip.valid)
        busy += time.thread_time() - t0
    if not stop.is_set():
        writer.close()
    log.debug("writer thread: writing %.1f s CPU", busy)


def _touching(offsets: tuple[int, ...], size: int, start: int, stop: int) -> range:
    """Indexes of the windows (starting at ``offsets``) that touch ``[start, stop)``."""
    touching = [k for k, o in enumerate(offsets) if o < stop and o + size > start]
    return range(touching[0], touching[-1] + 1)


def window_rows(tiles: TileGrid, start: int, stop: int) -> range:
    """Grid rows (0-based) whose windows touch raster rows ``[start, stop)``."""
    return _touching(tiles.ys, tiles.tile, start, stop)


def column_panels(width: int, panel: int, block: int) -> list[tuple[int, int]]:
    """Raster columns split into panels of about ``panel`` pixels starting on multiples of
    ``block`` (whole output blocks per write); one panel when ``panel`` is 0 or covers all."""
    if panel <= 0 or width <= panel:
        return [(0, width)]
    step = max(block, panel // block * block)
    return [(c, min(c + step, width)) for c in range(0, width, step)]


class _Counter:
    """Windows done across panels, reported as ``progress(done, total)``; checks ``cancel``."""

    def __init__(self, total: int, progress: Progress | None, cancel: Cancel | None) -> None:
        self.total, self.done = total, 0
        self.progress, self.cancel = progress, cancel

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)
        if self.cancel is not None and self.cancel():
            raise RenderCancelled("render cancelled; no output was written")


def _run_tiles(
    model: _Generator,
    reader: Any,
    writer: Any,
    tiles: TileGrid,
    rows: range,
    panel: tuple[int, int],
    aoi: AoiFilter | None,
    options: RenderOptions,
    counter: _Counter,
) -> tuple[int, int]:
    """Render the windows of grid rows ``rows`` that touch raster columns ``panel`` into
    ``writer``; returns (windows rendered, windows skipped)."""
    cols = _touching(tiles.xs, tiles.tile, *panel)
    acc = StripAccumulator(tiles, first_row=rows[0], cols=panel)
    last_col = cols[-1]
    stop = threading.Event()
    items: queue.Queue = queue.Queue(maxsize=options.batch_size * max(1, options.prefetch))
    strips: queue.Queue = queue.Queue(maxsize=2)
    read_thread = _Worker(
        lambda: _read_windows(reader, tiles, rows, cols, aoi, items, stop),
        "reader",
    )
    write_thread = _Worker(lambda: _write_strips(writer, strips, stop), "writer")
    done = rendered = 0
    clock = dict.fromkeys(("waiting for reads", "model", "blending", "waiting for writes"), 0.0)

    def flush(pending: list[_Item]) -> None:
        nonlocal done, rendered
        real = [it for it in pending if it.tile is not None]
        t0 = time.perf_counter()
        out = model(np.stack([it.tile for it in real])) if real else None
        t1 = time.perf_counter()
        if done == 0:
            log.debug("first batch (includes any compiling): %.2f s", t1 - t0)
        clock["model"] += t1 - t0
        k = 0
        for it in pending:
            if it.tile is not None:
                acc.add(it.window, out[k], it.valid)  # type: ignore[index]
                k += 1
            if it.window.col == last_col:
                strip = acc.finish_row(it.window.row)
                if strip is not None:
                    t2 = time.perf_counter()
                    _put_checked(strips, strip, write_thread)
                    clock["waiting for writes"] += time.perf_counter() - t2
        clock["blending"] += time.perf_counter() - t1
        rendered += k
        done += len(pending)
        counter.add(len(pending))

    read_thread.start()
    write_thread.start()
    try:
        pending: list[_Item] = []
        n_real = 0
        while True:
            t0 = time.perf_counter()
            item = _get(items, read_thread)
            clock["waiting for reads"] += time.perf_counter() - t0
            if item is _END:
                break
            assert isinstance(item, _Item)
            pending.append(item)
            n_real += item.tile is not None
            if n_real >= options.batch_size or len(pending) >= 8 * options.batch_size:
                flush(pending)
                pending, n_real = [], 0
        if pending:
            flush(pending)
        _put_checked(strips, _END, write_thread)
        t0 = time.perf_counter()
        write_thread.join()
        clock["waiting for writes"] += time.perf_counter() - t0
        if write_thread.error is not None:
            raise write_thread.error
        clock["blending"] -= clock["waiting for writes"]
        log.debug("main thread: %s", ", ".join(f"{k} {v:.1f} s" for k, v in clock.items()))
    finally:
        stop.set()
        if write_thread.is_alive():
            with contextlib.suppress(queue.Full):
                strips.put_nowait(_END)
        read_thread.join(timeout=10)
        write_thread.join(timeout=10)
    return rendered, done - rendered


@dataclass(frozen=True)
class RenderPlan:
    """The render grid of a scene and its windows, decided without reading pixels or running
    the model: for progress bars and for splitting one scene into strips (``row_range``)."""

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
    transform: Any = None
    crs: Any = None


_LARGE_GRID = _SizeOnly(16384, 16384)


def prepare_compiled(
    model: MapModel | str | Path | None = None, options: RenderOptions | None = None
) -> bool:
    """Build now, on this machine's CPU, the compiled generator that render() with ``options``
    would use there (or find it cached), so that no render pays the 10-20 s build. True when it
    is ready; False when it cannot be built (renders then run eagerly)."""
    options = options or RenderOptions()
    device = torch.device("cpu")
    mapmodel = _resolve_model(model, device)
    options.validate(mapmodel.card.tile_size)
    tiles = tile_grid(mapmodel.card, options, _LARGE_GRID)  # the windows of a large scene
    weights = grid_weights(tiles)
    batch = _batch_size(options, device, tiles.tile)
    return _Generator(mapmodel, device, options.amp, weights, batch, compile=True).compiled


def _batch_size(
    options: RenderOptions, device: torch.device, tile: int = 256, windows: int = 0
) -> int:
    """Windows per forward pass. One rule for render() and prepare_compiled(), whose compiled
    library must match the render's.

    0 (auto): AUTO_BATCH for the device, in 256 px windows' worth of pixels for larger windows.
    A number the user gave is capped by the scene's ``windows`` (when known) and by
    BATCH_MEMORY_BYTES of activations, so that a typo cannot exhaust the machine's memory.
    """
    if not options.batch_size:
        return max(1, AUTO_BATCH.get(device.type, 8) * 256**2 // max(tile, 256) ** 2)
    cap = max(1, BATCH_MEMORY_BYTES // (tile * tile * ACTIVATION_BYTES_PER_PIXEL))
    return max(1, min(options.batch_size, cap, windows or options.batch_size))


def lattice_phase(transform: Any, multiple: int) -> tuple[int, int]:
    """Window start offsets (x, y) modulo ``multiple`` that put windows on the CRS lattice of
    the render grid's pixel size: column ``-c/a`` and row ``-f/e`` of the grid's origin counted
    from the CRS origin. Two scenes on the same lattice then share the network's stride phase
    and agree exactly where they overlap, wherever each one starts."""
    col = round(transform.c / transform.a) if transform.a else 0
    row = round(transform.f / transform.e) if transform.e else 0
    return (-col) % multiple, (-row) % multiple


def tile_grid(card: ModelCard, options: RenderOptions, grid: Any) -> TileGrid:
    """The windows of a render: for a model with a bounded receptive field (in its card), core
    windows of ``options.window`` px (or one window that fits a small scene) whose margins, the
    receptive field rounded up to the network's stride, are computed and dropped; otherwise
    ``tile_size`` windows blended over ``options.overlap``."""
    if card.receptive_field <= 0:
        return TileGrid.over(grid.width, grid.height, card.tile_size, options.overlap)
    multiple = 2**card.num_downs
    margin = -(-card.receptive_field // multiple) * multiple
    phase = lattice_phase(grid.transform, multiple) if grid.crs is not None else (0, 0)
    window = max(-(-options.window // multiple) * multiple, 2 * margin + multiple)
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

    from . import raster

    options = options or RenderOptions()
    if isinstance(model, MapModel):
        card = model.card
    elif isinstance(model, ModelCard):
        card = model
    else:
        card = load_model(model, "cpu").card
    with rasterio.Env(), raster.open_raster(src) as ds:
        plan = _plan(ds, card, options, stats=False)
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


def _resolve_model(model: MapModel | str | Path | None, device: torch.device) -> MapModel:
    if isinstance(model, MapModel):
        return model
    return load_model(model, device)


def render(
    src: str | Path,
    dst: str | Path,
    model: MapModel | str | Path | None = None,
    options: RenderOptions | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> RenderResult:
    """Render the scene ``src`` into a map-style RGB(A) GeoTIFF ``dst``.

    ``model`` is a loaded :class:`MapModel`, a model file path, or None for the bundled default.
    The output has the input's CRS and footprint, at the model's GSD (or the input's grid with
    ``output_res="native"``), an alpha band where the input has nodata or an AOI is given, and
    appears only when complete (temp file + rename). Raises a GeomapGanError subclass for
    anything the user can fix, RenderCancelled when ``cancel()`` returns True.
    """
    import rasterio

    from . import raster
    from .device import resolve_device

    options = options or RenderOptions()
    start = time.perf_counter()
    dst_path = files.check_output(dst, options.overwrite, [src])
    env = rasterio.Env(GDAL_CACHEMAX=options.gdal_cache_mb, GDAL_ERROR_ON_LIBJPEG_WARNING=True)
    with env, raster.watch_corruption() as watch, contextlib.ExitStack() as stack:
        ds = stack.enter_context(raster.open_raster(src))
        files.check_output(dst_path, options.overwrite, [src, *ds.files])  # a VRT's sources
        device = resolve_device(options.device)
        mapmodel = _resolve_model(model, device)
        plan = _plan(ds, mapmodel.card, options)
        watch.check(str(src))
        tiles = tile_grid(mapmodel.card, options, plan.grid)
        tile = tiles.tile
        options = replace(options, batch_size=_batch_size(options, device, tile, len(tiles)))
        source = raster.render_source(ds, plan.grid)
        if source is not ds:
            stack.enter_context(source)
        log.info(
            "%s: %dx%d px, bands %s, %s m/px -> render grid %dx%d px at %s m/px, %d windows of "
            "%d px (overlap %d, margin %d), device %s",
            src,
            ds.width,
            ds.height,
            ",".join(map(str, plan.bands)),
            f"{plan.scene_gsd:.3g}" if plan.scene_gsd else "?",
            plan.grid.width,
            plan.grid.height,
            f"{plan.gsd:.3g}" if plan.gsd else "?",
            len(tiles),
            tile,
            options.overlap,
            tiles.margin,
            device,
        )
        weights = grid_weights(tiles)
        generator = _Generator(mapmodel, device, options.amp, weights, options.batch_size,
                               options.compile, len(tiles))  # fmt: skip
        reader = raster.RegionReader(source, plan.bands, plan.stretch, str(src), watch, plan.lut)
        warnings = _domain_warnings(plan, options)
        for w in warnings:
            log.warning("%s: %s", src, w)
        aoi = AoiFilter(plan.aoi_px) if plan.aoi_px is not None else None
        native = options.output_res == "native" and plan.grid != plan.native
        rows = window_rows(tiles, *plan.rows)
        out_grid = plan.native if native else plan.part
        rendered = skipped = 0
        with _output_chain(dst_path, options, native) as (render_path, final_step):
            out = raster.create_output(render_path, plan.part, plan.alpha, _co(options, native))
            with _opened(out):
                panels = column_panels(tiles.width, options.panel_width, out.block_shapes[0][1])
                total = sum(len(_touching(tiles.xs, tile, *p)) for p in panels) * len(rows)
                counter = _Counter(total, progress, cancel)
                for panel in panels:
                    writer = raster.BlockRowWriter(out, plan.aoi_px, plan.rows[0], panel)
                    n, k = _run_tiles(
                        generator, reader, writer, tiles, rows, panel, aoi, options, counter
                    )
                    rendered, skipped = rendered + n, skipped + k
            final_step(ds, plan, watch)
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
        windows=rendered,
        windows_skipped=skipped,
        seconds=seconds,
        domain_distance=plan.domain_distance,
        warnings=tuple(warnings),
    )
    log.info(
        "wrote %s: %dx%d px, %d windows (%d skipped) in %.1f s, %.2f MP/s",
        dst_path,
        result.width,
        result.height,
        rendered,
        skipped,
        seconds,
        result.megapixels_per_second,
    )
    return result


def _domain_warnings(plan: _Plan, options: RenderOptions) -> list[str]:
    """One line when the scene's colours are far from the training aerials', with what to try."""
    d = plan.domain_distance
    if d is None or d <= DOMAIN_WARNING_LEVELS:
        return []
    tips = "check --bands and --scale"
    if not options.harmonize:
        tips = "try --harmonize, and " + tips
    return [
        f"the scene's colours are far from the model's training aerials ({d:.0f} grey levels "
        f"apart, over {DOMAIN_WARNING_LEVELS:.0f} is unusual); the map may be unreliable: {tips}"
    ]


def _co(options: RenderOptions, native: bool) -> Mapping[str, str]:
    """User creation options apply to the file the user gets; intermediates (resampled to the
    input grid or copied to a COG afterwards) favour speed."""
    if options.driver == "GTiff" and not native:
        return options.creation_options
    return {"ZLEVEL": "1"}


@contextlib.contextmanager
def _opened(ds: Any) -> Iterator[Any]:
    try:
        yield ds
    finally:
        ds.close()


@contextlib.contextmanager
def _output_chain(
    dst: Path, options: RenderOptions, native: bool
) -> Iterator[tuple[Path, Callable[[Any, _Plan, Any], None]]]:
    """Where the tiles go and what turns that file into the output, all inside one atomic
    output: the temp file itself (GTiff at model GSD), or intermediates beside it (native grid,
    COG) that are removed whatever happens."""
    from . import raster

    scratch: list[Path] = []
    try:
        with files.atomic_output(dst, options.overwrite) as tmp:
            if not native and options.driver == "GTiff":
                yield tmp, lambda ds, plan, watch: None
                return
            render_path = files.temp_path(dst, "model")
            scratch.append(render_path)

            def finish(ds: Any, plan: _Plan, watch: Any) -> None:
                current = render_path
                if native:
                    target = tmp if options.driver == "GTiff" else files.temp_path(dst, "n")
                    if target != tmp:
                        scratch.append(target)
                    alpha = plan.alpha
                    co = options.creation_options if options.driver == "GTiff" else {}
                    with _opened(raster.create_output(target, plan.native, alpha, co)) as out:
                        raster.resample_to_grid(
                            current, out, ds, plan.bands, plan.aoi_native_px, watch
                        )
                    current = target
                if options.driver == "COG":
                    tmp.unlink()
                    raster.to_cog(current, tmp, options.creation_options)

            yield render_path, finish
    finally:
        for p in scratch:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
