"""``pairs`` and ``finetune``: teach the model a region from the user's imagery and map layers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import click

from geomap_gan.cli.app import QUIET_OPTION, cli, command_line, echo_json_or_table
from geomap_gan.cli.common import JsonEvents, parse_numbers

log = logging.getLogger("geomap_gan")

_PROGRESS = click.option(
    "--progress", "progress_mode", type=click.Choice(["bar", "json"]), default="bar",
    show_default=True,
    help="json: one JSON object per line on stdout for wrappers (QGIS): progress, log, result "
    "or error events.",
)  # fmt: skip


class _Bar:
    """A tqdm bar sized by the first progress(done, total) call; cleared on an error."""

    def __init__(self, desc: str, unit: str, quiet: bool) -> None:
        self.desc, self.unit, self.quiet = desc, unit, quiet
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None and exc[0] is not None:
            self.bar.leave = False
            self.bar.close()


# ---- pairs ---------------------------------------------------------------------------------------
@cli.command()
@click.argument("scene", metavar="SCENE")
@click.argument("out_dir", metavar="OUT_DIR", type=click.Path(path_type=Path))
@click.option("--layer", "layers", multiple=True, metavar="CLASS=FILE[:FIELD=VALUE,...]",
              help="A vector layer (GeoPackage, Shapefile, GeoJSON, FlatGeobuf; any CRS) drawn as "
              "map class CLASS (road, water, park, highway); only features whose FIELD is VALUE "
              "when given. FILE|layername=NAME picks a layer of a GeoPackage (default: its only "
              "layer, or the one named CLASS, as vectorize writes). Repeatable.")  # fmt: skip
@click.option("--width", "widths", multiple=True, metavar="CLASS=M",
              help="Stroke width of a class's lines, metres [default: the training maps' widths at "
              "the model's GSD: road 4.27 m, highway 6.25 m on the bundled model]; a layer's "
              "'width' or 'width_m' attribute (metres) overrides it per feature. Repeatable.")  # fmt: skip
@click.option("--map", "map_raster", default=None, metavar="MAP.tif",
              help="A map raster of any style (topographic map, saved web map), reprojected onto "
              "the scene's render grid; layers are drawn over it.")  # fmt: skip
@click.option("--coverage", default=None, metavar="FILE",
              help="Polygon(s) where the layers are complete (a vector file, or GeoJSON/WKT as "
              "--aoi); tiles lie wholly inside [default: the whole scene].")  # fmt: skip
@click.option("--val-share", default=0.15, show_default=True,
              help="Share of tiles for validation, in whole blocks; training tiles touching a val "
              "tile are dropped.")  # fmt: skip
@click.option("--tile", default=286, show_default=True,
              help="Side of a training pair's halves, px of the render grid (the trainer crops "
              "the model's tile size from it); val pairs are the model's tile size.")  # fmt: skip
@click.option("--step", default=0, show_default=True,
              help="Distance between tiles, px; 0: half the tile rounded down to the network's "
              "stride (128 for the bundled model).")  # fmt: skip
@click.option("--block", default=0, show_default=True,
              help="Side of the validation blocks, px; 0: of 1, 2 or 4 steps, the one that keeps the "
              "most training tiles.")  # fmt: skip
@click.option("--seed", default=0, show_default=True, help="Seed of the choice of val blocks.")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The model whose grid (GSD, stride) the pairs are cut on [default: bundled].")  # fmt: skip
@click.option("-b", "--bands", "--bidx", "bands", default=None, metavar="R,G,B",
              help="1-based band numbers of red, green, blue, as for render.")  # fmt: skip
@click.option("--scale", default=None, metavar="MIN,MAX",
              help="Linear stretch of input values to 0..255, as for render.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an earlier pairs folder at OUT_DIR.")
@QUIET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@_PROGRESS
@click.pass_context
def pairs(
    ctx: click.Context,
    scene: str,
    out_dir: Path,
    layers: tuple[str, ...],
    widths: tuple[str, ...],
    map_raster: str | None,
    coverage: str | None,
    val_share: float,
    tile: int,
    step: int,
    block: int,
    seed: int,
    model: Path | None,
    bands: str | None,
    scale: str | None,
    overwrite: bool,
    quiet: bool,
    as_json: bool,
    progress_mode: str,
) -> None:
    """Cut training pairs of SCENE (the aerial) and its map (vector layers drawn in the map
    style, and/or a map raster) on the render grid into OUT_DIR/train and OUT_DIR/val (A|B PNGs,
    a spatial split) with OUT_DIR/pairs.json (sources, CRS, GSD, style, each pair's bounds).
    Written atomically: an interrupted run leaves no OUT_DIR.

    \b
    Example:
      geomap-gan pairs naip.tif pairs/ --layer water=hydro.gpkg --coverage county.gpkg
      geomap-gan pairs scene.tif pairs/ --layer road=osm.gpkg:highway=residential \\
        --layer highway=osm.gpkg:highway=motorway --width road=6 --coverage area.geojson
      geomap-gan pairs scene.tif pairs/ --map topo.tif
      geomap-gan finetune pairs/ --out runs/region
    """
    from geomap_gan.training.draw import parse_width
    from geomap_gan.training.pairs import PairsOptions, make_pairs

    events = JsonEvents() if progress_mode == "json" else None
    with events or contextlib.nullcontext():
        options = PairsOptions(
            tile=tile,
            step=step,
            val_share=val_share,
            block=block,
            seed=seed,
            widths=dict(parse_width(w) for w in widths),
            bands=parse_numbers(bands, "--bands", int, 3),
            scale=parse_numbers(scale, "--scale", float, 2),
            overwrite=overwrite,
        )
        with _Bar("pairs", "pair", quiet or events is not None) as bar:
            result = make_pairs(
                scene, out_dir, layers, map_raster, coverage, options, model,
                progress=events or bar, command=command_line(),
            )  # fmt: skip
    data = dataclasses.asdict(result)
    data["out_dir"] = str(result.out_dir)
    if events:
        events.emit_event("result", **data)
    elif as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif not quiet:
        click.echo(
            f"wrote {result.train} train and {result.val} val pairs to {result.out_dir} "
            f"({result.tile} px, step {result.step}, {result.gsd:.4g} m/px, {result.crs}; "
            f"{result.dropped} tiles next to val dropped) in {result.seconds:.1f} s"
        )


# ---- finetune ------------------------------------------------------------------------------------
@cli.command()
@click.argument("pairs_dir", metavar="PAIRS_DIR", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Run folder: checkpoint.pt, log.csv, samples/, model.safetensors.")  # fmt: skip
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The base model to fine-tune [default: the bundled model].")  # fmt: skip
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Epochs at the full rate [default: the recipe's, by the number of pairs].",
)
@click.option(
    "--epochs-decay",
    type=int,
    default=None,
    help="Epochs of linear rate decay [default: the recipe's].",
)
@click.option("--lr", type=float, default=None, help="Learning rate [default: the recipe's].")
@click.option("--batch-size", type=int, default=None, help="Pairs per update [default: 8].")
@click.option("--freeze", type=click.Choice(["none", "encoder"]), default=None,
              help="Layers kept as in the base model [default: the recipe's].")  # fmt: skip
@click.option("--threads", default=0, show_default=True, help="CPU threads (0: all cores).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              show_default=True)  # fmt: skip
@click.option("--seed", default=0, show_default=True)
@click.option("--name", default="", help="Model name for the card [default: from PAIRS_DIR].")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@click.option("--overwrite", is_flag=True, help="Start over in an OUT that holds an earlier run.")
@QUIET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@_PROGRESS
@click.pass_context
def finetune(
    ctx: click.Context,
    pairs_dir: Path,
    out_dir: Path,
    model: Path | None,
    quiet: bool,
    as_json: bool,
    progress_mode: str,
    **opts: Any,
) -> None:
    """Fine-tune a model (the bundled one by default) on a pairs folder made by `pairs`: warm
    start, a CPU recipe for a few hundred pairs in minutes, validation on PAIRS_DIR/val with the
    legend's class IoU, checkpoints and --resume. The result renders with
    `geomap-gan render --model OUT/model.safetensors`.

    \b
    Example:
      geomap-gan finetune pairs/ --out runs/region
      geomap-gan render scene.tif map.tif --model runs/region/model.safetensors
    """
    from geomap_gan.training.finetune import FinetuneOptions
    from geomap_gan.training.finetune import finetune as run_finetune
    from geomap_gan.training.process import place_process

    events = JsonEvents() if progress_mode == "json" else None
    with events or contextlib.nullcontext():
        options = FinetuneOptions(**{k: v for k, v in opts.items() if v is not None})
        with _Bar("finetune", "update", quiet or events is not None) as bar:
            result = run_finetune(
                pairs_dir, out_dir, model, options, progress=events or bar,
                place=place_process, command=command_line(),
            )  # fmt: skip
    data = dataclasses.asdict(result)
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}
    if events:
        events.emit_event("result", **data)
    elif as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif not quiet:
        click.echo(f"model written to {result.model} ({result.updates} updates, "
                   f"{result.seconds:.0f} s)")  # fmt: skip
        shown = {k: v for k, v in result.metrics.items()
                 if not k.startswith("iou_") or k[4:] in result.classes}  # fmt: skip
        if result.classes:
            ious = [result.metrics.get(f"iou_{c}", 0.0) for c in result.classes]
            shown["miou"] = sum(ious) / len(ious)  # over the classes the pairs draw
        echo_json_or_table(shown, False)
