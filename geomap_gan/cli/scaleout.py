"""``render-many`` and the Dask hooks of ``render --strips``."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geomap_gan.cli.app import QUIET_OPTION, cli
from geomap_gan.cli.common import parse_creation_options, parse_numbers, render_options

if TYPE_CHECKING:
    from geomap_gan.vector.options import VectorizeOptions

log = logging.getLogger("geomap_gan")


# ---- scale-out on Dask: render-many, render --strips ---------------------------------------------
def _dask_hooks(quiet: bool) -> dict[str, Any]:
    """``on_client``: print the worker count and dashboard link once connected; ``watch``:
    Dask's own progress bar (drawn on stderr so stdout stays clean for --json). None when quiet."""
    from geomap_gan.cluster import require_dask

    require_dask()
    import distributed  # noqa: F401  (sets Dask's own log levels on import; quieten them next)

    root = logging.getLogger().level
    logging.getLogger("distributed").setLevel(root if root <= logging.DEBUG else logging.WARNING)
    if quiet:
        return {}

    def on_client(client: Any) -> None:
        from geomap_gan.cluster import dashboard_link, has_bokeh

        workers = len(client.scheduler_info(n_workers=-1)["workers"])
        link = dashboard_link(client) or "none"
        hint = "" if has_bokeh() or link == "none" else " (pip install 'bokeh>=3.1' to view it)"
        click.echo(f"Dask: {workers} worker(s), dashboard: {link}{hint}", err=True)

    def watch(futures: list) -> None:

        from distributed import progress

        address = futures[0].client.scheduler.address  # not the default client's: may differ
        with contextlib.redirect_stdout(sys.stderr):
            progress(futures, multi=False, scheduler=address)

    return {"on_client": on_client, "watch": watch}


def run_strips(
    src: str,
    dst: Path,
    model: Path | None,
    options: Any,
    scheduler: str | None,
    strips: int | None,
    quiet: bool,
    as_json: bool,
    vectors: Path | None = None,
    vector_options: VectorizeOptions | None = None,
) -> None:
    """``render --scheduler/--strips``: one scene in strips on Dask workers; with ``vectors``,
    the assembled map then vectorized on this machine (``vector_options`` checked already)."""
    from geomap_gan.cli.vectorize import run_vectorize, summary
    from geomap_gan.distributed import render_strips

    report = render_strips(
        src, dst, model, options, scheduler=scheduler, n_strips=strips, **_dask_hooks(quiet)
    )
    if not quiet and not as_json:
        click.echo(
            f"wrote {report.path}: {report.width}x{report.height} px in {len(report.strips)} "
            f"strips on {report.workers} worker(s), {report.seconds:.1f} s"
        )
    data = report.to_dict()
    if vectors is not None and vector_options is not None:
        result = run_vectorize(report.path, vectors, vector_options, quiet or as_json, None)
        data["vectors"] = result.to_dict()
        if not quiet and not as_json:
            click.echo(summary(result))
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))


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
@click.option("--vectors", is_flag=True,
              help="Also vectorize each map, in its scene's task, into OUT_DIR/<scene>.gpkg "
              "(as `geomap-gan vectorize` with its defaults).")  # fmt: skip
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
    vectors: bool,
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
      geomap-gan render-many scenes/*.tif --out-dir maps/ --vectors
    """
    from geomap_gan.cli.vectorize import vector_options_for
    from geomap_gan.distributed import render_many as run_many
    from geomap_gan.rendering.options import RenderOptions

    options = RenderOptions(
        bands=parse_numbers(bands, "--bands", int, 3),
        scale=parse_numbers(scale, "--scale", float, 2),
        creation_options=parse_creation_options(creation_options),
        **opts,
    )
    report = run_many(
        inputs, out_dir, model, options, scheduler=scheduler, n_workers=workers,
        vectors=vector_options_for(options) if vectors else None, **_dask_hooks(quiet),
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
