"""Options and progress adapters shared by the render commands."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geomap_gan import formats
from geomap_gan.cli.app import user_error
from geomap_gan.errors import InputError
from geomap_gan.rendering.options import (
    RenderOptions as _RO,  # the CLI's render and train defaults are the library's
)

log = logging.getLogger("geomap_gan")


# ---- render --------------------------------------------------------------------------------------
def parse_numbers(text: str | None, option: str, kind: type, count: int | None) -> tuple | None:
    """'1,2,3' -> (1, 2, 3); an InputError (one line, exit 2) when malformed."""

    if text is None:
        return None
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError:
        values = ()
    if not values or (count is not None and len(values) != count):
        n = f"{count} " if count else ""
        raise InputError(f"{option} needs {n}comma-separated numbers, got {text!r}")
    return values


def parse_creation_options(items: tuple[str, ...]) -> dict[str, str]:

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--co needs NAME=VALUE (e.g. --co COMPRESS=ZSTD), got {item!r}")
        out[name.strip().upper()] = value.strip()
    return out


class JsonEvents(logging.Handler):
    """``render --progress json``: the render's events as JSON lines on stdout, for wrappers.

    Why: a wrapper such as the QGIS plugin runs the engine in its own process (no torch or
    rasterio in QGIS's Python) and needs progress, log lines and the outcome in a form it can
    parse. One object per line, each with ``event``:

    - ``{"event": "progress", "done": 3, "total": 20}`` (windows)
    - ``{"event": "status", "message": "..."}`` (a long step that is not windows)
    - ``{"event": "log", "level": "WARNING", "message": "..."}`` (INFO and above)
    - ``{"event": "result", "path": ..., "width": ..., ...}`` (as ``--json``), last on success
    - ``{"event": "error", "message": "..."}``, last on a user error (exit code 2)

    Used as a context manager around the render: it takes over the engine's log for its duration
    and turns a user error into an error event before the CLI's own handling.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._lock_out = threading.Lock()
        self._saved: tuple[int, bool] = (logging.NOTSET, True)

    def emit_event(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, default=str)
        with self._lock_out:  # progress comes from worker threads too
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def emit(self, record: logging.LogRecord) -> None:  # logging.Handler
        try:
            self.emit_event("log", level=record.levelname, message=record.getMessage())
        except Exception:  # a log handler must never raise into the engine
            self.handleError(record)

    def __call__(self, done: int, total: int) -> None:  # render(progress=...)
        self.emit_event("progress", done=done, total=total)

    def status(self, message: str) -> None:  # render(status=...)
        self.emit_event("status", message=message)

    def __enter__(self) -> JsonEvents:
        self._saved = (log.level, log.propagate)
        log.addHandler(self)
        log.setLevel(min(log.getEffectiveLevel(), logging.INFO))
        log.propagate = False  # stderr stays for what is not an event
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        log.removeHandler(self)
        log.setLevel(self._saved[0])
        log.propagate = self._saved[1]
        message = user_error(exc) if isinstance(exc, Exception) else None
        if message is not None:
            self.emit_event("error", message=message)


class RenderBar:
    """A tqdm bar over windows, sized by the first ``render(progress=...)`` call (no second
    look at the scene). Use as a context manager: a render that fails or is interrupted clears
    its bar, so that the error message stands alone on its line."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.step: Any = None  # the line of a step before the windows (status)

    def status(self, text: str) -> None:
        """Show ``text`` on the bar's line until the windows start (render(status=...))."""
        from tqdm import tqdm

        self._end_step()
        self.step = tqdm(total=None, desc=f"render: {text}", bar_format="{desc}")

    def _end_step(self) -> None:
        if self.step is not None:
            self.step.leave = False  # the bar takes its line
            self.step.close()
            self.step = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self._end_step()
            self.bar = tqdm(total=total, desc="render", unit="win", dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()

    def __enter__(self) -> RenderBar | None:
        return None if self.quiet else self

    def __exit__(self, *exc: object) -> None:
        self._end_step()
        if self.bar is not None and exc[0] is not None:
            self.bar.leave = False  # closing erases the unfinished bar
            self.bar.close()


def _with_options(fn: Callable[..., Any], options: list[Callable]) -> Callable[..., Any]:
    for option in reversed(options):
        fn = option(fn)
    return fn


def render_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``render`` (RenderOptions 1:1), defined once and shared with
    ``render-many`` so that both commands take the same names and defaults."""
    return _with_options(fn, _RENDER_OPTIONS)


def generator_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The render options that decide which compiled generator a render uses, for ``compile``."""
    return _with_options(fn, _GENERATOR_OPTIONS)


# fmt: off
# The options that decide which compiled generator a render uses: shared with `compile`, whose
# library must match (aot.package_key).
_GENERATOR_OPTIONS = [
    click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Model file (default: the bundled model)."),
    click.option("--overlap", default=_RO.overlap, show_default=True,
                  help="Overlap of blended windows, pixels of the model grid (models whose card "
                  "has no receptive field, such as v1 files)."),
    click.option("--window", default=_RO.window, show_default=True,
                  help="Window side for models with a bounded receptive field: each window keeps "
                  "the part whose receptive field lies inside it; small scenes get one window "
                  "that fits."),
    click.option("--batch-size", default=_RO.batch_size, show_default=True,
                  help="Windows per forward pass; 0: auto (by device and window size)."),
    click.option("--amp/--no-amp", default=_RO.amp, show_default=True,
                  help="bf16 autocast where the hardware runs it natively."),
]
_RENDER_OPTIONS = [
    *_GENERATOR_OPTIONS,
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=_RO.device,
                  show_default=True),
    click.option("-b", "--bands", "--bidx", "bands", default=None, metavar="R,G,B",
                  help="1-based band numbers of red, green, blue [default: from the colour "
                  "interpretation, else 1,2,3]."),
    click.option("--scale", default=None, metavar="MIN,MAX",
                  help="Linear stretch of input values to 0..255 [default: uint8 as is, other "
                  "types a 2-98 percentile stretch per band]."),
    click.option("--gsd", type=float, default=None,
                  help="Override the model's input GSD, metres per pixel."),
    click.option("--output-res", type=click.Choice(["model", "native"]), default=_RO.output_res,
                  show_default=True,
                  help="Write at the model's GSD or on the input's own pixel grid."),
    click.option("--aoi", default=None,
                  help="Area of interest: GeoJSON or WKT polygon, inline or a file."),
    click.option("--aoi-crs", default=None,
                  help="CRS of --aoi [default: named in it, else EPSG:4326]."),
    click.option("--format", "driver", type=click.Choice(list(formats.RENDER_FORMATS)),
                  default=_RO.driver, show_default=True,
                  help="; ".join(f"{f}: {formats.FORMATS[f].description}"
                                 for f in formats.RENDER_FORMATS) + "."),
    click.option("--co", "creation_options", multiple=True, metavar="NAME=VALUE",
                  help="GDAL creation option of the output driver (repeatable)."),
    click.option("--harmonize/--no-harmonize", default=_RO.harmonize, show_default=True,
                  help="Map the scene's per-channel colour distribution onto the training "
                  "aerials' (from the model card) before the model sees it."),
    click.option("--overwrite", is_flag=True, help="Replace OUT if it exists."),
    click.option("--allow-ungeoreferenced", is_flag=True,
                  help="Render an input without CRS/geotransform in pixel space."),
    click.option("--threads", default=_RO.threads, show_default=True,
                  help="torch CPU threads (0: one per core on CPU, 2 when the model runs on a GPU)."),
    click.option("--compile/--no-compile", default=None,
                  help="Run the generator compiled (about 1.7x faster per window on CPU): built "
                  "ahead of time once per model and machine (10-20 s) and cached in "
                  "~/.cache/geomap-gan [default: when cached, or to build on CPU for scenes of "
                  "2000+ windows]."),
]
# fmt: on
