"""``train``: the pix2pix trainer's command."""

from __future__ import annotations

import dataclasses
import logging
import math
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from geomap_gan.cli.app import cli, command_line, echo_json_or_table
from geomap_gan.training.config import TrainConfig

log = logging.getLogger("geomap_gan")


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
            {
                k: f"{p[k]:.3f}"
                for k in ("G_GAN", "G_L1", "G_shift", "D_real", "D_fake")
                if k in p and not math.isnan(p[k])
            }  # a term that is off shows nothing
        )
        if p["batch"] >= p["batches"]:
            bar.pop("tqdm").close()

    return progress


_OPTION_NAMES = {"out_dir": "--out"}  # fields whose option is not --field-name


def _field_option(f: dataclasses.Field) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option of one TrainConfig field: its name, type, default and help."""
    hint = typing.get_type_hints(TrainConfig)[f.name]
    args = [t for t in typing.get_args(hint) if t is not type(None)]
    name = _OPTION_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
    kw: dict[str, Any] = {"default": f.default, "show_default": True, "help": f.metadata["help"]}
    if hint is bool:
        return click.option(f"{name}/--no-{name[2:]}", f.name, **kw)
    if typing.get_origin(hint) is typing.Literal:
        return click.option(name, f.name, type=click.Choice(list(args)), **kw)
    if f.default is None:
        kw["show_default"] = False
        return click.option(name, f.name, type=args[0], **kw)
    return click.option(name, f.name, type=hint, **kw)


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Every TrainConfig field but DATA_DIR as an option, in the dataclass's order."""
    for f in reversed([f for f in dataclasses.fields(TrainConfig) if f.name != "data_dir"]):
        fn = _field_option(f)(fn)
    return fn


@cli.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@config_options
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
    from geomap_gan.training.loop import Trainer
    from geomap_gan.training.process import place_process

    opts["val_dir"] = str(opts["val_dir"]) if opts["val_dir"] else None
    cfg = TrainConfig(data_dir=str(data_dir), **opts)
    progress = _tqdm_train_progress(ctx.obj["quiet"])
    trainer = Trainer(cfg, place_process(cfg), progress=progress, command=command_line())
    if trainer.skipped:
        click.echo(f"Warning: skipped {len(trainer.skipped)} unreadable image(s)", err=True)
    metrics = trainer.fit(resume=resume, overwrite=overwrite)
    if trainer.is_main:
        click.echo(f"model written to {trainer.out / 'model.safetensors'}")
        if metrics:
            echo_json_or_table(metrics, False)
