"""``vectorize``: a map raster to GIS vector layers (and the ``--vectors`` step of the render
commands, which vectorizes the map they just wrote)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geomap_gan.cli.app import QUIET_OPTION, cli
from geomap_gan.cli.common import JsonEvents, RenderBar
from geomap_gan.vector import defaults

if TYPE_CHECKING:
    from geomap_gan.vector.core import VectorizeResult
    from geomap_gan.vector.options import VectorizeOptions


class VectorizeBar(RenderBar):
    """A tqdm bar over the map's rows (``vectorize(progress=...)``), cleared on an error."""

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc="vectorize", unit="row", dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()


def stage_progress(events: JsonEvents, stage: str) -> Callable[[int, int], None]:
    """``--progress json`` events of one stage of a command (``"stage": "vectorize"`` after a
    render's own progress events), so that a wrapper can tell the two bars apart."""

    def progress(done: int, total: int) -> None:
        events.emit_event("progress", done=done, total=total, stage=stage)

    return progress


def run_vectorize(
    src: str | Path,
    dst: str | Path,
    options: VectorizeOptions,
    quiet: bool,
    events: JsonEvents | None,
) -> VectorizeResult:
    """Vectorize ``src`` into ``dst`` with the command's progress: a tqdm bar, JSON events
    (stage ``vectorize``) or none."""
    from geomap_gan.vector import vectorize

    if events is not None:
        return vectorize(src, dst, options, progress=stage_progress(events, "vectorize"))
    with VectorizeBar(quiet) as bar:
        return vectorize(src, dst, options, progress=bar)


def summary(result: VectorizeResult) -> str:
    """One line: the output and the features per layer."""
    counts = ", ".join(f"{n} {name}" for name, n in result.features.items())
    return f"wrote {result.path}: {counts} in {result.seconds:.1f} s"


# fmt: off
@cli.command()
@click.argument("src", metavar="MAP")  # a str: click's Path would collapse /vsicurl/http://
@click.argument("dst", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--layers", default=defaults.LAYERS, show_default=True, metavar="NAMES",
              help="Comma-separated map classes to write, each its own layer: water and park "
              "as polygons, road and highway as centre lines.")
@click.option("--min-area", type=float, default=defaults.MIN_AREA, show_default=True,
              help="Square metres: drop smaller polygons and fill smaller holes (0: keep all).")
@click.option("--simplify", type=float, default=defaults.SIMPLIFY, show_default=True,
              help="Metres: simplification tolerance, topology kept (0: exact pixel outlines "
              "and skeleton paths).")
@click.option("--min-length", type=float, default=defaults.MIN_LENGTH, show_default=True,
              help="Metres: prune skeleton spurs reaching less than this beyond their road, "
              "drop isolated lines shorter than this (0: keep all).")
@click.option("--overwrite", is_flag=True, help="Replace OUT (and its layers' files) if they exist.")
@click.option("--allow-ungeoreferenced", is_flag=True,
              help="Vectorize a map without CRS: coordinates in pixels, measures at 1.9 m a pixel.")
@QUIET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--progress", "progress_mode", type=click.Choice(["bar", "json"]), default="bar",
              show_default=True,
              help="json: one JSON object per line on stdout for wrappers (QGIS): progress "
              "(rows), log, result or error events, as render's.")
# fmt: on
def vectorize(
    src: str,
    dst: Path,
    layers: str,
    min_area: float,
    simplify: float,
    min_length: float,
    overwrite: bool,
    allow_ungeoreferenced: bool,
    quiet: bool,
    as_json: bool,
    progress_mode: str,
) -> None:
    """Turn the map raster MAP (a map from `geomap-gan render`, or any 3-band 8-bit raster drawn
    in the training maps' colours) into vector layers in OUT, in the map's CRS: water and park
    polygons (holes kept; class, area_m2) and road and highway centre lines meeting at their
    junctions (class, length_m, width_m). The format comes from OUT's suffix: .gpkg (one file,
    a layer per class), .fgb, .geojson or .shp (a file per layer, OUT_<class>.<suffix>, when
    several are asked for). Maps of any size are read in strips, in bounded memory.

    \b
    Example:
      geomap-gan vectorize map.tif map.gpkg
      geomap-gan vectorize map.tif water.geojson --layers water --min-area 100
      geomap-gan vectorize map.tif roads.shp --layers road,highway --simplify 2
      geomap-gan render scene.tif map.tif --vectors map.gpkg   # in one run
    """
    from geomap_gan.vector.options import VectorizeOptions

    events = JsonEvents() if progress_mode == "json" else None
    with events or contextlib.nullcontext():
        options = VectorizeOptions(
            layers=layers,
            min_area=min_area,
            simplify=simplify,
            min_length=min_length,
            overwrite=overwrite,
            allow_ungeoreferenced=allow_ungeoreferenced,
        )
        result = run_vectorize(src, dst, options, quiet, events)
    data = result.to_dict()
    if events is not None:
        events.emit_event("result", **data)
    elif as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif not quiet:
        click.echo(summary(result))


def vector_options_for(render_options: Any, layers: str = defaults.LAYERS) -> VectorizeOptions:
    """The vectorize options of a render's ``--vectors``: the defaults, with the render's
    ``--overwrite`` and ``--allow-ungeoreferenced``."""
    from geomap_gan.vector.options import VectorizeOptions

    return VectorizeOptions(
        layers=layers,
        overwrite=render_options.overwrite,
        allow_ungeoreferenced=render_options.allow_ungeoreferenced,
    )
