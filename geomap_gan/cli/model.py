"""``info``, ``compile`` and ``evaluate``: commands about a model file."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from geomap_gan.cli.app import cli, echo_json_or_table
from geomap_gan.cli.common import generator_options
from geomap_gan.errors import GeomapGanError, InputError
from geomap_gan.rendering.options import MAX_BATCH

log = logging.getLogger("geomap_gan")


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
    echo_json_or_table(data, as_json)


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
    from geomap_gan.rendering.engine import prepare_compiled
    from geomap_gan.rendering.options import RenderOptions

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
@click.option("--grid-count", default=8, show_default=True, help="Pairs in the grid (1 to 64).")
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

    if not 1 <= batch_size <= MAX_BATCH:
        raise InputError(f"--batch-size must be 1 to {MAX_BATCH}, got {batch_size}")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be 1 or more, got {limit}")
    result = run_evaluate(
        model, data_dir, split, batch_size, device, amp, limit, grid, grid_count, overwrite
    )
    echo_json_or_table(result, as_json)
