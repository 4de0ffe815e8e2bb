"""``render``: one scene, or one huge scene in strips on Dask."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geomap_gan.cli.app import QUIET_OPTION, cli
from geomap_gan.cli.common import (
    JsonEvents,
    RenderBar,
    parse_creation_options,
    parse_numbers,
    render_options,
)
from geomap_gan.cli.scaleout import run_strips
from geomap_gan.cli.vectorize import run_vectorize, summary, vector_options_for
from geomap_gan.errors import InputError

if TYPE_CHECKING:
    from geomap_gan.vector.options import VectorizeOptions

log = logging.getLogger("geomap_gan")


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
@click.option("--vectors", type=click.Path(path_type=Path), default=None, metavar="PATH",
              help="Also vectorize the map into PATH (.gpkg, .fgb, .geojson, .shp), as "
              "`geomap-gan vectorize` with its defaults, after the map is written; checked "
              "before rendering (--overwrite replaces it too).")  # fmt: skip
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
    vectors: Path | None,
    **opts: Any,
) -> None:
    """Render the aerial/satellite GeoTIFF IN as a map-style RGB GeoTIFF OUT with the same CRS
    and footprint, at the model's GSD (resampled on the fly) or the input's (--output-res).

    \b
    Example:
      geomap-gan render scene.tif map.tif
      geomap-gan render scene.tif map.tif --model runs/maps/model.safetensors --format COG
      geomap-gan render naip.tif map.tif --bands 1,2,3 --aoi area.geojson --overwrite
      geomap-gan render scene.tif map.tif --vectors map.gpkg
      geomap-gan render huge.tif map.tif --scheduler tcp://10.0.0.5:8786 --strips 64
    """
    import dataclasses

    from geomap_gan.device import configure_process, resolve_device
    from geomap_gan.model.modelfile import load_model
    from geomap_gan.rendering.engine import render as run_render
    from geomap_gan.rendering.options import RenderOptions

    events = JsonEvents() if progress_mode == "json" else None
    with events or contextlib.nullcontext():
        options = RenderOptions(
            bands=parse_numbers(bands, "--bands", int, 3),
            scale=parse_numbers(scale, "--scale", float, 2),
            creation_options=parse_creation_options(creation_options),
            **opts,
        )
        vector_opts = check_vectors(src, dst, vectors, options)  # before any work
        if scheduler or strips:
            if events:
                raise InputError(
                    "--progress json renders on one machine; drop --scheduler/--strips"
                )
            run_strips(
                src, dst, model, options, scheduler, strips, quiet, as_json, vectors, vector_opts
            )
            return
        device = resolve_device(options.device)
        configure_process(device, options.threads)  # the CLI owns the process, render() does not
        mapmodel = load_model(model, device)
        with RenderBar(quiet or events is not None) as bar:
            feedback = events or bar
            status = feedback.status if feedback is not None else None
            result = run_render(src, dst, mapmodel, options, progress=feedback, status=status)
        if not quiet and not as_json and events is None:
            click.echo(render_summary(result))
        vector_result = None
        if vectors is not None and vector_opts is not None:
            vector_result = run_vectorize(result.path, vectors, vector_opts, quiet, events)
    data = dataclasses.asdict(result)
    data["path"] = str(result.path)
    data["megapixels_per_second"] = result.megapixels_per_second
    if vector_result is not None:
        data["vectors"] = vector_result.to_dict()
    if events:
        events.emit_event("result", **data)
    elif as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif not quiet and vector_result is not None:
        click.echo(summary(vector_result))


def render_summary(result: Any) -> str:
    """The one-line summary of a render."""
    built = result.compile_seconds
    generator = result.generator + (f", built in {built:.0f} s" if built is not None else "")
    return (
        f"wrote {result.path}: {result.width}x{result.height} px, {result.crs or 'no CRS'}, "
        f"{result.windows} windows ({result.windows_skipped} skipped) in "
        f"{result.seconds:.1f} s, {result.megapixels_per_second:.2f} MP/s ({generator})"
    )


def check_vectors(
    src: str, dst: Path, vectors: Path | None, options: Any
) -> VectorizeOptions | None:
    """The vectorize options of ``--vectors``, its output checked now, before rendering: a
    known suffix, not the input (nor a file GDAL reads for it) nor the map, and not there
    already unless ``--overwrite``. None without ``--vectors``."""
    if vectors is None:
        return None
    from geomap_gan import files
    from geomap_gan.vector import check_outputs

    vector_opts = vector_options_for(options)
    inputs = files.InputFiles([*files.gdal_files(src), dst])
    check_outputs(vectors, vector_opts.classes, vector_opts.overwrite, inputs)
    return vector_opts
