"""What a user asks of a render and what it reports back: RenderOptions (the CLI's and the
QGIS algorithm's options, 1:1) and RenderResult. Light: no torch, no rasterio."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from geomap_gan import formats
from geomap_gan.errors import InputError

log = logging.getLogger(__name__)


Progress = Callable[[int, int], None]
Status = Callable[[str], None]  # a long step that is not windows (building the compiled generator)
MAX_BATCH = 4096  # windows per forward pass: more would ask for more memory than any device has
MAX_THREADS = 1024


Cancel = Callable[[], bool]


@dataclass(frozen=True)
class RenderOptions:
    """How to render. Units: pixels of the render grid, metres per pixel for ``gsd``.

    ``bands`` are 1-based (red, green, blue); None: from the colour interpretation, else 1,2,3.
    ``scale`` (min, max) maps input values linearly to 0..255; None: uint8 as is, other types by a
    per-band 2-98 percentile stretch over the scene. ``gsd`` overrides the model card's input GSD.
    ``output_res``: ``model`` writes at the model's GSD, ``native`` at the input's pixel grid.
    ``aoi``: polygon(s) as GeoJSON/WKT text, a file holding either, or a shapely geometry, in
    ``aoi_crs`` (default: the CRS named in it, else EPSG:4326). ``creation_options`` are GDAL
    creation options of the output driver (``--co``). ``driver``: a ``render`` format of the
    registry (:data:`geomap_gan.formats.RENDER_FORMATS`).
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
    driver: str = formats.GTIFF.name  # a name of formats.RENDER_FORMATS
    creation_options: Mapping[str, str] = field(default_factory=dict)
    harmonize: bool = False  # map the scene's per-channel distribution onto the training one
    overwrite: bool = False
    allow_ungeoreferenced: bool = False
    percentiles: tuple[float, float] = (2.0, 98.0)
    max_upscale: float = 16.0  # refuse to enlarge a scene more than this to reach the model GSD
    compile: bool | None = None  # compiled generator (aot.py); None: where it pays, see TileRunner
    threads: int = 0  # torch CPU threads (0: one per core on CPU, ACCELERATOR_CPU_THREADS on GPU)

    def validate(self, tile: int) -> None:
        """InputError for values that cannot work with a model of ``tile`` pixel windows."""
        if not 0 <= self.overlap <= tile // 2:  # more would render every pixel 4+ times
            raise InputError(f"--overlap must be 0 to {tile // 2} pixels, got {self.overlap}")
        if not 64 <= self.window <= 8192:
            raise InputError(f"--window must be 64 to 8192 pixels, got {self.window}")
        if not 0 <= self.threads <= MAX_THREADS:
            raise InputError(f"--threads must be 0 (auto) to {MAX_THREADS}, got {self.threads}")
        if not 0 <= self.batch_size <= MAX_BATCH:
            raise InputError(
                f"--batch-size must be 0 (auto) to {MAX_BATCH} windows, got {self.batch_size}"
            )
        if self.gsd is not None and not 0.01 <= self.gsd <= 10_000:  # also refuses inf, NaN
            raise InputError(f"--gsd must be a positive number of metres, got {self.gsd}")
        if self.output_res not in ("model", "native"):
            raise InputError(f"--output-res must be model or native, got {self.output_res!r}")
        formats.render_format(self.driver)
        if self.scale is not None and not all(math.isfinite(float(v)) for v in self.scale):
            raise InputError(f"--scale needs two finite numbers, got {self.scale}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:  # also refuses NaN
            raise InputError(f"percentiles must satisfy 0 <= low < high <= 100, got {lo}, {hi}")
        if not 1 <= self.max_upscale <= 1000:
            raise InputError(f"max_upscale must be 1 to 1000, got {self.max_upscale}")
        if len(self.creation_options) > 64:
            raise InputError(f"at most 64 --co options, got {len(self.creation_options)}")


@dataclass(frozen=True)
class EngineSettings:
    """The engine's own knobs, not user options: how a render is carried out, never what it
    produces (a strip of rows aside), so they stay out of the CLI and the QGIS dialog."""

    row_range: tuple[int, int] | None = None  # render-grid rows [start, stop) only (Dask strips)
    prefetch: int = 3  # batches read ahead of the model
    panel_width: int = 4096  # render-grid columns per pass (bounds memory on wide scenes; 0: all)
    gdal_cache_mb: int = 16  # GDAL block cache: reads are block-aligned, so a small one does
    # GDAL threads that decode the blocks of one read and compress the blocks of one written
    # strip in parallel (GTiff NUM_THREADS); 0: one per core. The reader and writer threads
    # hand GDAL whole block rows, so this is how I/O scales with cores on a GPU host.
    io_threads: int = 0

    @property
    def gdal_threads(self) -> int:
        """``io_threads``, or one per core this process may run on."""
        if self.io_threads:
            return self.io_threads
        if hasattr(os, "sched_getaffinity"):  # Linux: honours taskset and container CPU sets
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1

    def validate(self, options: RenderOptions) -> None:
        """InputError for settings that cannot work with ``options``."""
        if (
            self.panel_width < 0
            or self.prefetch < 1
            or self.gdal_cache_mb < 1
            or self.io_threads < 0
        ):
            raise InputError(f"engine settings out of range: {self}")
        if self.row_range is not None:
            start, stop = self.row_range
            if not 0 <= start < stop:
                raise InputError(f"row_range must be 0 <= start < stop, got {self.row_range}")
            if options.output_res == "native":
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
    generator: Literal["compiled", "eager"] = "eager"  # how the windows ran, to the last one
    compile_seconds: float | None = None  # set when this render built the compiled generator

    @property
    def megapixels_per_second(self) -> float:
        return self.megapixels / self.seconds if self.seconds > 0 else 0.0
