"""Refine a trained model on training pairs (see geomap_gan/refine.py): average it with a second
run's model, re-estimate BatchNorm statistics, refit the outermost decoder levels (--fit-head),
and fit the output gain, in that order. Val is never read; score the result with
`geomap-gan evaluate` and ship it with scripts/ship_model.py.

    python scripts/refine_model.py geomap_gan/models/default.safetensors runs/refined.safetensors \
        --average runs/v15c/model.safetensors --weight 0.3 --fit-gain --data ../shared/data/maps286
    python scripts/refine_model.py geomap_gan/models/default.safetensors runs/head.safetensors \
        --fit-head --data ../shared/data/maps286
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import shlex
import sys

import torch

from geomap_gan import files
from geomap_gan.errors import GeomapGanError
from geomap_gan.model.modelfile import MapModel, load_model, save_model
from geomap_gan.training.config import TrainConfig
from geomap_gan.training.data import centre_crop, load_split
from geomap_gan.training.metrics import pair_sides
from geomap_gan.training.process import git_commit
from geomap_gan.training.refine import (
    HeadFit,
    average_generators,
    fit_decoder_head,
    fit_output_gain,
    fold_output_gain,
    pre_tanh,
)
from geomap_gan.training.task import recalibrate_batchnorm


def main() -> None:
    try:
        refine(parse_args())
    except GeomapGanError as exc:  # a bad path or file: one line, no traceback
        sys.exit(f"error: {exc}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", help="the base model file")
    ap.add_argument("out", help="the refined model file to write")
    ap.add_argument("--data", required=True, help="dataset folder whose train split is used")
    ap.add_argument("--average", metavar="MODEL", help="a second run's model of the same card")
    ap.add_argument("--weight", type=float, default=0.5, help="the second model's share (0..1)")
    ap.add_argument("--fit-head", action="store_true", help="refit the outer decoder levels")
    ap.add_argument("--head-epochs", type=int, default=HeadFit.epochs, help="of --fit-head")
    ap.add_argument("--seed", type=int, default=HeadFit.seed, help="of --fit-head's samples")
    ap.add_argument("--fit-gain", action="store_true", help="fit and fold the output gain")
    ap.add_argument("--pairs", type=int, default=400, help="training pairs for BatchNorm and gain")
    ap.add_argument("--load-size", type=int, default=286, help="the pairs' side, centre-cropped")
    ap.add_argument("--name", help="the refined model's name in its card")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    if not 0.0 <= args.weight <= 1.0:
        ap.error(f"--weight must be 0 to 1 (the second model's share), got {args.weight}")
    return args


def refine(args: argparse.Namespace) -> None:
    """Average, re-estimate BatchNorm, refit the head, fit the gain, as asked; write the model
    with its card."""
    out = files.check_output(args.out, args.overwrite, [args.model, args.average or args.model])

    model = load_model(args.model)
    g, card = model.generator, model.card
    history = [card.command]
    other = load_model(args.average) if args.average else None
    fields = ("arch", "ngf", "num_downs", "antialias", "norm", "tile_size", "direction")
    if other and any(getattr(other.card, f) != getattr(card, f) for f in fields):
        raise GeomapGanError(f"{args.average} is not the architecture of {args.model}")
    pairs, _ = load_split(
        args.data, "train", args.load_size, limit=None if args.fit_head else args.pairs
    )
    crops = centre_crop(pairs[: args.pairs], card.tile_size)
    src, dst = pair_sides(card.direction)
    if other:
        history.append(other.card.command)
        g = average_generators(g, other.generator, args.weight)
        cfg = TrainConfig(
            data_dir=args.data, batch_size=16, crop_size=card.tile_size, num_downs=card.num_downs,
            load_size=args.load_size, direction=card.direction, amp=False,  # type: ignore[arg-type]
        )  # fmt: skip
        recalibrate_batchnorm(g, pairs[: args.pairs], cfg, torch.device("cpu"))
        print(f"averaged with {args.average} (weight {args.weight}); BatchNorm re-estimated")
    if args.fit_head:
        head = HeadFit(epochs=args.head_epochs, seed=args.seed)
        epoch, score = fit_decoder_head(g, pairs, card.tile_size, card.direction, head)
        print(f"decoder head refitted: epoch {epoch} kept, held-out train mIoU {score:.4f}")
    if args.fit_gain:
        z = pre_tanh(g, crops[:, src])
        gain, score = fit_output_gain(z, crops[:, dst])
        fold_output_gain(g, gain)
        print(f"output gain {gain}: train mIoU {score:.4f}")
    history.append(" ".join(["python", *map(shlex.quote, sys.argv)]))
    card = dataclasses.replace(
        card,
        name=args.name or card.name,
        command=" && ".join(c for c in history if c),  # how each input was made, then this
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        git_commit=git_commit(),
        metrics={},
    )
    path = save_model(MapModel(g.eval(), card), out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
