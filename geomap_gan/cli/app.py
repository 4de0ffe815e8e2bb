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


class GeomapGroup(click.Group):
    """The process's owner: one signal policy (SIGTERM behaves as Ctrl-C) and one error policy
    (library errors and a full disk become one-line messages with exit code 2)."""

    def invoke(self, ctx: click.Context) -> Any:
        import signal

        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return super().invoke(ctx)
        except GeomapGanError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except Terminated:
            click.echo("Terminated; no partial output was left.", err=True)
            sys.exit(143)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as exc:
            if not disk_full(exc):
                raise
            click.echo(f"Error: {DISK_FULL}", err=True)
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
