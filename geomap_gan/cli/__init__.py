"""The ``geomap-gan`` command line: a thin shell over the library.

The only module that imports click and tqdm or configures logging. Heavy imports (torch, rasterio)
happen inside command bodies so ``--help`` and ``--version`` are instant. Every GeomapGanError
becomes a one-line ``Error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geomap_gan import __version__
from geomap_gan.errors import GeomapGanError, InputError
from geomap_gan.rendering.options import (
    RenderOptions as _RO,  # the CLI's render and train defaults are the library's
)
from geomap_gan.training.config import TrainConfig as _TC

log = logging.getLogger("geomap_gan")


DISK_FULL = "the disk is full; free some space and run again"


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, systemd, kill), raised in the main thread like Ctrl-C, so that the
    same cleanup runs: temp files removed, a training checkpoint saved."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _disk_full(exc: BaseException) -> bool:
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
            if not _disk_full(exc):
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


def _command_line() -> str:
    return "geomap-gan " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _echo_json_or_table(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    width = max(len(k) for k in data)
    for k, v in data.items():
        click.echo(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")


# ---- info ----------------------------------------------------------------------------------------
@cli.command()
@click.argument("model", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(model: Path | None, as_json: bool) -> None:
    """Print the model card of MODEL (default: the bundled model).

    \b
    Example:
      geomap-gan info
      geomap-gan info runs/maps/model.safetensors --json
    """
    import dataclasses

    from geomap_gan.model.modelfile import load_model
    from geomap_gan.model.nets import count_parameters

    m = load_model(model)
    data = dataclasses.asdict(m.card)
    data["parameters"] = count_parameters(m.generator)
    if not as_json:
        data["metrics"] = ", ".join(f"{k}={v}" for k, v in data["metrics"].items()) or "-"
    _echo_json_or_table(data, as_json)


# ---- train ---------------------------------------------------------------------------------------
def _tqdm_train_progress(quiet: bool) -> Callable[[dict[str, float]], None] | None:
    if quiet:
        return None
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def progress(p: dict[str, float]) -> None:
        if bar.get("epoch") != p["epoch"]:
            if "tqdm" in bar:
                bar["tqdm"].close()
            bar["epoch"] = p["epoch"]
            bar["tqdm"] = tqdm(
                total=int(p["batches"]), desc=f"epoch {int(p['epoch'])}", unit="batch"
            )
        bar["tqdm"].update(1)
        bar["tqdm"].set_postfix(
            {k: f"{p[k]:.3f}" for k in ("G_GAN", "G_L1", "G_shift", "D_real", "D_fake") if k in p}
        )
        if p["batch"] >= p["batches"]:
            bar.pop("tqdm").close()

    return progress


@cli.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", default=_TC.out_dir, show_default=True, help="Run folder.")
@click.option("--val-dir", default=None, help="Folder with the val split (default DATA_DIR).")
@click.option(
    "--direction", type=click.Choice(["AtoB", "BtoA"]), default=_TC.direction, show_default=True
)
@click.option("--ngf", default=_TC.ngf, show_default=True, help="Generator width.")
@click.option("--ndf", default=_TC.ndf, show_default=True, help="Discriminator width.")
@click.option(
    "--norm", type=click.Choice(["batch", "instance"]), default=_TC.norm, show_default=True
)
@click.option(
    "--gan-mode", type=click.Choice(["vanilla", "lsgan", "hinge"]), default=_TC.gan_mode,
    show_default=True,
)  # fmt: skip
@click.option(
    "--num-downs", default=_TC.num_downs, show_default=True,
    help="U-Net levels (8: pix2pix unet_256; 5-6 bound the receptive field).",
)  # fmt: skip
@click.option("--antialias/--no-antialias", default=_TC.antialias, show_default=True,
              help="Blur before each subsampling (less dependence on the stride phase).")  # fmt: skip
@click.option("--init-from", default=None, help="Warm start G from this model file's tensors.")
@click.option("--aug-dihedral/--no-aug-dihedral", default=_TC.aug_dihedral, show_default=True,
              help="The 8 rotations/flips.")  # fmt: skip
@click.option("--aug-scale", default=_TC.aug_scale, show_default=True,
              help="Scale jitter: crop side x [1/(1+S), 1+S], resized to the crop size.")  # fmt: skip
@click.option("--aug-photometric/--no-aug-photometric", default=_TC.aug_photometric, show_default=True,
              help="Brightness, contrast, gamma, saturation, hue, gain, haze (aerial only).")  # fmt: skip
@click.option("--aug-blur/--no-aug-blur", default=_TC.aug_blur, show_default=True)
@click.option("--aug-noise/--no-aug-noise", default=_TC.aug_noise, show_default=True)
@click.option("--aug-jpeg/--no-aug-jpeg", default=_TC.aug_jpeg, show_default=True)
@click.option("--aug-clean", default=_TC.aug_clean, show_default=True,
              help="Share of samples trained without scale jitter or pixel changes (0 to 1).")  # fmt: skip
@click.option(
    "--lambda-gan", default=_TC.lambda_gan, show_default=True,
    help="Weight of the adversarial (PatchGAN) term; 0: L1 and shift terms only, the "
    "discriminator is not run (about 4x cheaper an update on a CPU).",
)  # fmt: skip
@click.option(
    "--lambda-l1", default=_TC.lambda_l1, show_default=True, help="Weight of the L1 term."
)
@click.option(
    "--lambda-shift", default=_TC.lambda_shift, show_default=True,
    help="Weight of the shift-consistency term (G of the aerial moved by a random sub-stride "
    "offset against G's map moved alike; 0: off).",
)  # fmt: skip
@click.option(
    "--road-weight", default=_TC.road_weight, show_default=True,
    help="Extra weight of the L1 term on the real map's road pixels (1 + W there; 0: plain L1).",
)  # fmt: skip
@click.option(
    "--d-warmup", default=_TC.d_warmup, show_default=True,
    help="Updates at the start of the run that train the discriminator only (G frozen): with "
    "--init-from, a fresh D learns before its gradients reach the warm-started G.",
)  # fmt: skip
@click.option(
    "--ema-decay", default=_TC.ema_decay, show_default=True,
    help="Validate and export an exponential moving average of G's weights, updated after each "
    "G update with this decay (0: off, the last weights; 0.999 averages about 1000 updates).",
)  # fmt: skip
@click.option("--lr", default=_TC.lr, show_default=True)
@click.option("--beta1", default=_TC.beta1, show_default=True)
@click.option("--epochs", default=_TC.epochs, show_default=True, help="Epochs at constant LR.")
@click.option(
    "--epochs-decay", default=_TC.epochs_decay, show_default=True, help="Epochs of linear LR decay."
)
@click.option("--batch-size", default=_TC.batch_size, show_default=True)
@click.option(
    "--load-size", default=_TC.load_size, show_default=True, help="Resize halves to this (px)."
)
@click.option("--crop-size", default=_TC.crop_size, show_default=True, help="Random crop (px).")
@click.option("--amp/--no-amp", default=_TC.amp, show_default=True, help="bf16 where native.")
@click.option("--workers", default=_TC.workers, show_default=True, help="DataLoader workers.")
@click.option("--seed", default=_TC.seed, show_default=True)
@click.option(
    "--save-every", default=_TC.save_every, show_default=True, help="Checkpoint every N epochs."
)
@click.option(
    "--val-every", default=_TC.val_every, show_default=True, help="Validate every N epochs."
)
@click.option(
    "--val-subset", default=_TC.val_subset, show_default=True, help="Val pairs per validation."
)
@click.option(
    "--bn-recalibrate", default=_TC.bn_recalibrate, show_default=True,
    help="Training pairs used to re-estimate BatchNorm statistics before validation/export (0: off).",
)  # fmt: skip
@click.option(
    "--source-gsd", default=_TC.source_gsd, show_default=True, help="m/px of the source tiles."
)
@click.option(
    "--source-size", default=_TC.source_size, show_default=True, help="px of the source tiles."
)
@click.option("--device", default=_TC.device, show_default=True, help="auto, cpu, cuda or mps.")
@click.option(
    "--threads", default=_TC.threads, show_default=True, help="CPU threads (0: all cores)."
)
@click.option("--strict", is_flag=True, help="Unreadable images are an error, not skipped.")
@click.option("--limit", type=int, default=None, help="Use only the first N training pairs.")
@click.option("--max-steps", type=int, default=None, help="Stop after N updates.")
@click.option("--name", default="", help="Model name for the card.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@click.option("--overwrite", is_flag=True, help="Start over in an OUT that holds an earlier run.")
@click.pass_context
def train(ctx: click.Context, data_dir: Path, resume: bool, overwrite: bool, **opts: Any) -> None:
    """Train a pix2pix generator on an A|B pair folder (DATA_DIR/train, DATA_DIR/val).

    Writes OUT/checkpoint.pt, OUT/log.csv, OUT/samples/*.png and OUT/model.safetensors.
    Runs under torchrun for DistributedDataParallel.

    \b
    Example:
      geomap-gan train ../shared/data/maps286 --ngf 32 --batch-size 8 --epochs 30 \\
        --epochs-decay 30 --out runs/ngf32
    """
    from geomap_gan.training.loop import TrainConfig, Trainer, place_process

    opts["val_dir"] = str(opts["val_dir"]) if opts["val_dir"] else None
    cfg = TrainConfig(data_dir=str(data_dir), **opts)
    progress = _tqdm_train_progress(ctx.obj["quiet"])
    trainer = Trainer(cfg, place_process(cfg), progress=progress, command=_command_line())
    if trainer.skipped:
        click.echo(f"Warning: skipped {len(trainer.skipped)} unreadable image(s)", err=True)
    metrics = trainer.fit(resume=resume, overwrite=overwrite)
    if trainer.is_main:
        click.echo(f"model written to {trainer.out / 'model.safetensors'}")
        if metrics:
            _echo_json_or_table(metrics, False)


# ---- download ------------------------------------------------------------------------------------
class _ByteBar:
    """Adapts ``progress(bytes_done, bytes_total)`` to a tqdm bar in bytes with rate and ETA."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        from tqdm import tqdm

        if self.bar is None or done < self.bar.n or total != self.bar.total:
            self.close()  # first call, or the server restarted the file from byte 0
            self.bar = tqdm(total=total, initial=done, desc=self.desc, unit="B",
                            unit_scale=True, unit_divisor=1024)  # fmt: skip
        else:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@cli.group()
def download() -> None:
    """Fetch training data."""


@download.command("maps")
@click.argument("dest", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--url", default=None, help="Mirror of maps.tar.gz (default: "
              "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/maps.tar.gz).")  # fmt: skip
@click.option("--force", is_flag=True, help="Download again even if DIR is complete and verified.")
@click.option("--timeout", default=60.0, show_default=True,
              help="Seconds without data before an attempt fails.")  # fmt: skip
@click.option("--retries", default=5, show_default=True,
              help="Further attempts, each resuming with an HTTP Range request.")  # fmt: skip
@click.option("--manifest", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None,
              help="SHA-256 manifest to verify against (default: the shipped one).")  # fmt: skip
@click.pass_context
def download_maps(
    ctx: click.Context,
    dest: Path,
    url: str | None,
    force: bool,
    timeout: float,
    retries: int,
    manifest: Path | None,
) -> None:
    """Fetch the pix2pix maps dataset (1096 train + 1098 val A|B pairs) into DIR/train and
    DIR/val, checking every file against its SHA-256.

    An interrupted download resumes where it stopped; nothing appears at DIR until every file has
    verified; a complete DIR is left alone (--force to redo).

    \b
    Example:
      geomap-gan download maps data/maps
      geomap-gan train data/maps --out runs/maps
    """
    from geomap_gan.download import MAPS_URL, DownloadOptions
    from geomap_gan.download import download_maps as run_download

    opts = DownloadOptions(url=url or MAPS_URL, force=force, timeout=timeout, retries=retries)
    bar = None if ctx.obj["quiet"] else _ByteBar(Path(opts.url).name or "download")
    try:
        result = run_download(dest, opts, progress=bar, manifest=manifest)
    finally:
        if bar is not None:
            bar.close()
    if result.skipped:
        click.echo(
            f"{result.path} already holds all {result.files} verified files (--force to redo)"
        )
    else:
        click.echo(f"{result.files} files downloaded and verified in {result.path}")


# ---- render --------------------------------------------------------------------------------------
def _parse_numbers(text: str | None, option: str, kind: type, count: int | None) -> tuple | None:
    """'1,2,3' -> (1, 2, 3); an InputError (one line, exit 2) when malformed."""
    from geomap_gan.errors import InputError

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


def _parse_creation_options(items: tuple[str, ...]) -> dict[str, str]:
    from geomap_gan.errors import InputError

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
        if isinstance(exc, GeomapGanError):
            self.emit_event("error", message=str(exc))
        elif exc is not None and _disk_full(exc):
            self.emit_event("error", message=DISK_FULL)


class _RenderBar:
    """A tqdm bar over windows, sized by the first ``render(progress=...)`` call (no second
    look at the scene). Use as a context manager: a render that fails or is interrupted clears
    its bar, so that the error message stands alone on its line."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc="render", unit="win", dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()

    def __enter__(self) -> _RenderBar | None:
        return None if self.quiet else self

    def __exit__(self, *exc: object) -> None:
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
    click.option("--format", "driver", type=click.Choice(["GTiff", "COG"]), default=_RO.driver,
                  show_default=True, help="COG: Cloud Optimized GeoTIFF with overviews."),
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


@cli.command()
@click.argument("src", metavar="IN")  # a str: click's Path would collapse /vsicurl/http://
@click.argument("dst", metavar="OUT", type=click.Path(path_type=Path))
@render_options
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Render in strips on this Dask scheduler (tcp://host:8786); "
              "needs `pip install geomap-gan[distributed]`.")  # fmt: skip
@click.option("--strips", type=click.IntRange(min=1), default=None, metavar="N",
              help="Split the scene into N horizontal strips rendered by Dask workers "
              "[default with --scheduler: one per worker; without it: a local cluster].")  # fmt: skip
@QUIET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--progress", "progress_mode", type=click.Choice(["bar", "json"]), default="bar",
              show_default=True,
              help="json: one JSON object per line on stdout for wrappers (QGIS): progress, "
              "log, result or error events; see the README.")  # fmt: skip
@click.pass_context
def render(
    ctx: click.Context,
    src: str,
    dst: Path,
    model: Path | None,
    bands: str | None,
    scale: str | None,
    creation_options: tuple[str, ...],
    quiet: bool,
    as_json: bool,
    progress_mode: str,
    scheduler: str | None,
    strips: int | None,
    **opts: Any,
) -> None:
    """Render the aerial/satellite GeoTIFF IN as a map-style RGB GeoTIFF OUT with the same CRS
    and footprint, at the model's GSD (resampled on the fly) or the input's (--output-res).

    \b
    Example:
      geomap-gan render scene.tif map.tif
      geomap-gan render scene.tif map.tif --model runs/maps/model.safetensors --format COG
      geomap-gan render naip.tif map.tif --bands 1,2,3 --aoi area.geojson --overwrite
      geomap-gan render huge.tif map.tif --scheduler tcp://10.0.0.5:8786 --strips 64
    """
    import dataclasses

    from geomap_gan.device import configure_process, resolve_device
    from geomap_gan.model.modelfile import load_model
    from geomap_gan.rendering.engine import RenderOptions
    from geomap_gan.rendering.engine import render as run_render

    events = JsonEvents() if progress_mode == "json" else None
    with events or contextlib.nullcontext():
        options = RenderOptions(
            bands=_parse_numbers(bands, "--bands", int, 3),
            scale=_parse_numbers(scale, "--scale", float, 2),
            creation_options=_parse_creation_options(creation_options),
            **opts,
        )
        if scheduler or strips:
            if events:
                raise InputError(
                    "--progress json renders on one machine; drop --scheduler/--strips"
                )
            _render_strips(src, dst, model, options, scheduler, strips, quiet, as_json)
            return
        device = resolve_device(options.device)
        configure_process(device, options.threads)  # the CLI owns the process, render() does not
        mapmodel = load_model(model, device)
        with _RenderBar(quiet or events is not None) as bar:
            result = run_render(src, dst, mapmodel, options, progress=events or bar)
    data = dataclasses.asdict(result)
    data["path"] = str(result.path)
    data["megapixels_per_second"] = result.megapixels_per_second
    if events:
        events.emit_event("result", **data)
    elif as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif not quiet:
        click.echo(
            f"wrote {result.path}: {result.width}x{result.height} px, {result.crs or 'no CRS'}, "
            f"{result.windows} windows ({result.windows_skipped} skipped) in "
            f"{result.seconds:.1f} s, {result.megapixels_per_second:.2f} MP/s"
        )


# ---- scale-out on Dask: render-many, render --strips ---------------------------------------------
def _dask_hooks(quiet: bool) -> dict[str, Any]:
    """``on_client``: print the worker count and dashboard link once connected; ``watch``:
    Dask's own progress bar (drawn on stderr so stdout stays clean for --json). None when quiet."""
    from geomap_gan.distributed import require_dask

    require_dask()
    import distributed  # noqa: F401  (sets Dask's own log levels on import; quieten them next)

    root = logging.getLogger().level
    logging.getLogger("distributed").setLevel(root if root <= logging.DEBUG else logging.WARNING)
    if quiet:
        return {}

    def on_client(client: Any) -> None:
        from geomap_gan.distributed import dashboard_link, has_bokeh

        workers = len(client.scheduler_info(n_workers=-1)["workers"])
        link = dashboard_link(client) or "none"
        hint = "" if has_bokeh() or link == "none" else " (pip install 'bokeh>=3.1' to view it)"
        click.echo(f"Dask: {workers} worker(s), dashboard: {link}{hint}", err=True)

    def watch(futures: list) -> None:
        import contextlib

        from distributed import progress

        address = futures[0].client.scheduler.address  # not the default client's: may differ
        with contextlib.redirect_stdout(sys.stderr):
            progress(futures, multi=False, scheduler=address)

    return {"on_client": on_client, "watch": watch}


def _render_strips(
    src: str,
    dst: Path,
    model: Path | None,
    options: Any,
    scheduler: str | None,
    strips: int | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """``render --scheduler/--strips``: one scene in strips on Dask workers."""
    from geomap_gan.distributed import render_strips

    report = render_strips(
        src, dst, model, options, scheduler=scheduler, n_strips=strips, **_dask_hooks(quiet)
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    elif not quiet:
        click.echo(
            f"wrote {report.path}: {report.width}x{report.height} px in {len(report.strips)} "
            f"strips on {report.workers} worker(s), {report.seconds:.1f} s"
        )


@cli.command("render-many")
@click.argument("inputs", metavar="INPUTS...", nargs=-1, required=True,
                type=click.Path(path_type=Path))  # fmt: skip
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the outputs (created if missing) and mosaic.vrt.")  # fmt: skip
@render_options
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Dask scheduler to run on (tcp://host:8786) [default: a local cluster].")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Workers of the local cluster [default: one per GPU, else one per core].")  # fmt: skip
@QUIET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.pass_context
def render_many(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    out_dir: Path,
    model: Path | None,
    bands: str | None,
    scale: str | None,
    creation_options: tuple[str, ...],
    scheduler: str | None,
    workers: int | None,
    quiet: bool,
    as_json: bool,
    **opts: Any,
) -> None:
    """Render many scenes on Dask, one task per scene: OUT_DIR/<scene>.tif for each input (a
    folder contributes its *.tif files) plus OUT_DIR/mosaic.vrt over them. Takes the options of
    `render`. Outputs that already exist and are complete are skipped, so an interrupted job
    resumes where it stopped; a scene that fails is retried, then reported (exit code 1).

    Inputs, model and OUT_DIR must be visible to every worker under the same paths. Needs
    `pip install geomap-gan[distributed]`.

    \b
    Example:
      geomap-gan render-many scenes/*.tif --out-dir maps/
      geomap-gan render-many scenes/ --out-dir maps/ --scheduler tcp://10.0.0.5:8786
    """
    from geomap_gan.distributed import render_many as run_many
    from geomap_gan.rendering.engine import RenderOptions

    options = RenderOptions(
        bands=_parse_numbers(bands, "--bands", int, 3),
        scale=_parse_numbers(scale, "--scale", float, 2),
        creation_options=_parse_creation_options(creation_options),
        **opts,
    )
    report = run_many(
        inputs, out_dir, model, options, scheduler=scheduler, n_workers=workers,
        **_dask_hooks(quiet),
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    elif not quiet:
        click.echo(
            f"{len(report.rendered)} rendered, {len(report.skipped)} skipped (already done), "
            f"{len(report.failed)} failed in {report.seconds:.1f} s on {report.workers} worker(s)"
        )
        if report.mosaic:
            click.echo(f"mosaic: {report.mosaic}")
        for path in report.mosaic_excluded:
            click.echo(f"not in the mosaic (another CRS): {path}")
    for scene in report.failed:
        click.echo(f"failed: {scene.src}: {scene.error}", err=True)
    if report.failed:
        click.echo(
            f"Error: {len(report.failed)} of {len(report.scenes)} scene(s) failed; fix them and "
            "run again (finished outputs are kept and skipped)",
            err=True,
        )
        ctx.exit(1)


# ---- evaluate ------------------------------------------------------------------------------------
@cli.command("compile")
@generator_options
def compile_command(
    model: Path | None, overlap: int, window: int, batch_size: int, amp: bool
) -> None:
    """Compile the generator for this machine's CPU now (10-20 s, once per model and machine),
    so that CPU renders with the same options run it compiled from their first window (about
    1.7x faster per window) instead of building it during a render.

    \b
    Example:
      geomap-gan compile && geomap-gan render big_scene.tif map.tif
    """
    from geomap_gan.rendering.engine import RenderOptions, prepare_compiled

    options = RenderOptions(
        overlap=overlap, window=window, batch_size=batch_size, amp=amp, device="cpu"
    )
    if not prepare_compiled(model, options):
        raise GeomapGanError(
            "the generator could not be compiled here (see the warning above; a C++ compiler "
            "and torch >= 2.6 are needed); renders still work, uncompiled"
        )
    click.echo("compiled generator ready: CPU renders with these options will use it")


@cli.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Model file (default: the bundled model).")  # fmt: skip
@click.option("--split", default="val", show_default=True)
@click.option("--batch-size", default=16, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--amp/--no-amp", default=True, show_default=True, help="bf16 where native.")
@click.option("--limit", type=int, default=None, help="Only the first N pairs.")
@click.option("--grid", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a PNG grid: input | generated | real map.")  # fmt: skip
@click.option("--grid-count", default=8, show_default=True, help="Pairs in the grid.")
@click.option("--overwrite", is_flag=True, help="Replace the --grid file if it exists.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def evaluate(
    data_dir: Path,
    model: Path | None,
    split: str,
    batch_size: int,
    device: str,
    amp: bool,
    limit: int | None,
    grid: Path | None,
    grid_count: int,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Score a model on every pair of DATA_DIR/SPLIT at 256x256: RMSE, acc5/acc10, PSNR, SSIM
    and map-class IoU (road, water, park, highway, miou).

    \b
    Example:
      geomap-gan evaluate ../shared/data/maps256 --json
    """
    from geomap_gan.training.metrics import evaluate as run_evaluate

    if batch_size < 1:
        raise InputError(f"--batch-size must be 1 or more, got {batch_size}")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be 1 or more, got {limit}")
    result = run_evaluate(
        model, data_dir, split, batch_size, device, amp, limit, grid, grid_count, overwrite
    )
    _echo_json_or_table(result, as_json)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="geomap-gan")
