"""The ``geomap-gan`` group: the process's owner (signal and error policy, logging set-up), and the
helpers every command shares."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from typing import Any

import click

from geomap_gan import __version__
from geomap_gan.errors import GeomapGanError

log = logging.getLogger("geomap_gan")


DISK_FULL = "the disk is full; free some space and run again"


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, systemd, kill), raised in the main thread like Ctrl-C, so that the
    same cleanup runs: temp files removed, a training checkpoint saved."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def disk_full(exc: BaseException) -> bool:
    """Whether an error (or its cause) is a full disk or quota, from any layer (OS, GDAL)."""
    import errno

    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line (GDAL and tarfile run over several), at most ``limit`` characters."""
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _os_error(exc: OSError) -> str:
    what = exc.strerror or _one_line(str(exc)) or type(exc).__name__
    name = exc.filename if exc.filename is not None else None
    return f"{what}: {name}" if name else what


def user_error(exc: BaseException) -> str | None:
    """The one-line message for an error that is the environment's or the data's, not a bug:
    a GeomapGanError, a full disk, GDAL (RasterioError, CPLE_*), the OS (OSError: permissions,
    missing files, FIFOs), and decoding (tar, gzip, zlib, images, text, pickles, safetensors).
    None for anything else (a bug: its traceback is wanted). The error boundary of every
    command, and of ``--progress json``'s error event."""
    if isinstance(exc, GeomapGanError):
        return _one_line(str(exc), 2000)
    if disk_full(exc):
        return DISK_FULL
    kind = _decoding_error(exc)
    if kind is not None:
        return f"{kind}: {_one_line(str(exc)) or type(exc).__name__}"
    if isinstance(exc, OSError):
        return _os_error(exc)
    return None


def _decoding_error(exc: BaseException) -> str | None:
    """What failed, for the GDAL and decoding errors (modules already imported only: an error
    of a library that was never loaded cannot be raised)."""
    import pickle
    import tarfile
    import zlib

    gdal = [m for m in (sys.modules.get("rasterio.errors"), sys.modules.get("rasterio._err")) if m]
    gdal_types = tuple(
        t for m in gdal for t in (getattr(m, "RasterioError", None), getattr(m, "CPLE_BaseError", None))
        if t is not None
    )  # fmt: skip
    if gdal_types and isinstance(exc, gdal_types):
        return "GDAL"
    image = sys.modules.get("PIL.Image")
    if image is not None and isinstance(
        exc, (image.DecompressionBombError, image.UnidentifiedImageError)
    ):
        return "cannot read an image"
    safetensors = sys.modules.get("safetensors")
    decoding: tuple[type[BaseException], ...] = (
        tarfile.TarError, zlib.error, EOFError, UnicodeDecodeError, pickle.UnpicklingError,
    )  # fmt: skip
    if safetensors is not None and hasattr(safetensors, "SafetensorError"):
        decoding += (safetensors.SafetensorError,)
    if isinstance(exc, decoding) or type(exc).__name__ == "BadGzipFile":
        return "cannot decode the data"
    return None


class GeomapGroup(click.Group):
    """The process's owner: one signal policy (SIGTERM behaves as Ctrl-C) and one error policy
    (:func:`user_error`: library, GDAL, OS and decoding errors and a full disk become one-line
    messages with exit code 2; anything else is a bug and keeps its traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        import signal

        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Terminated:
            click.echo("Terminated; no partial output was left.", err=True)
            sys.exit(143)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as exc:
            message = user_error(exc)
            if message is None:
                raise
            click.echo(f"Error: {message}", err=True)
            sys.exit(2)
        finally:
            signal.signal(signal.SIGTERM, previous)


_OWN_LOGGING = {"installed": False}  # whether _setup_logging configured the root logger


def _setup_logging(verbose: int, quiet: bool) -> None:
    levels = {0: logging.WARNING, 1: logging.INFO}
    level = logging.ERROR if quiet else levels.get(verbose, logging.DEBUG)
    _OWN_LOGGING["installed"] = not logging.getLogger().handlers  # a host (pytest) may own it
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _command_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """A command's ``-q/--quiet`` is the group's ``-q`` (one quiet): errors only, no bar and no
    summary, whichever side of the command name it is given on."""
    if value:
        ctx.ensure_object(dict)["quiet"] = True
        if _OWN_LOGGING["installed"]:
            logging.getLogger().setLevel(logging.ERROR)
    return value or bool((ctx.obj or {}).get("quiet"))


QUIET_OPTION = click.option("-q", "--quiet", is_flag=True, callback=_command_quiet,
                            help="Errors only, no progress bar or summary (as geomap-gan -q).")  # fmt: skip


@click.group(cls=GeomapGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="geomap-gan")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only, no progress bar.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Turn georeferenced aerial/satellite imagery into map-style rasters (pix2pix)."""
    _setup_logging(verbose, quiet)
    ctx.obj = {"quiet": quiet}


def command_line() -> str:
    return "geomap-gan " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def echo_json_or_table(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    width = max(len(k) for k in data)
    for k, v in data.items():
        click.echo(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="geomap-gan")
