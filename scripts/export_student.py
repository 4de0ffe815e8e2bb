"""Export a running distillation's latest checkpoint as a model file, to evaluate it mid-run.

The trainer writes ``model.safetensors`` only at the end; this builds the same file from
``RUN/checkpoint.pt`` now: the generator (the weight average if the run keeps one), its
BatchNorm statistics re-estimated over the first training pairs as the trainer does before it
validates or exports, and the card the trainer would write (teacher provenance included).

    .venv/bin/python scripts/export_student.py runs/student16 runs/student16/mid.safetensors
    .venv/bin/geomap-gan evaluate ../shared/data/maps256 --model runs/student16/mid.safetensors --json
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import torch

from geomap_gan.device import resolve_device
from geomap_gan.model.modelfile import MapModel, ModelCard, load_model, save_model
from geomap_gan.model.nets import UnetGenerator, receptive_radius
from geomap_gan.training.config import TrainConfig
from geomap_gan.training.data import aerial_quantiles, load_split
from geomap_gan.training.distill import file_sha256, recipe, teacher_provenance
from geomap_gan.training.task import recalibrate_batchnorm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    state = torch.load(args.run / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = TrainConfig(**state["config"])
    g = UnetGenerator(ngf=cfg.ngf, num_downs=cfg.num_downs, norm=cfg.norm, antialias=cfg.antialias)
    g.load_state_dict(state.get("G_ema", state["G"]))
    g = g.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    pairs, _ = load_split(cfg.data_dir, "train", cfg.load_size, limit=max(cfg.bn_recalibrate, 1))
    device = resolve_device("cpu")
    if cfg.norm == "batch" and cfg.bn_recalibrate > 0:
        recalibrate_batchnorm(g, pairs[: cfg.bn_recalibrate], cfg, device)
    teacher: dict[str, str] = {}
    if cfg.teacher:
        teacher = teacher_provenance(
            load_model(cfg.teacher), cfg.teacher, file_sha256(cfg.teacher), recipe(cfg)
        )
    card = ModelCard(
        name=f"{cfg.name or 'student'}-epoch{int(state['epoch'])}",
        ngf=cfg.ngf,
        num_downs=cfg.num_downs,
        antialias=cfg.antialias,
        receptive_field=receptive_radius(cfg.num_downs, cfg.antialias),
        input_quantiles=aerial_quantiles(pairs, cfg.direction),
        norm=cfg.norm,
        tile_size=cfg.crop_size,
        gsd=round(cfg.gsd, 4),
        direction=cfg.direction,
        dataset=str(cfg.data_dir),
        epochs=int(state["epoch"]),
        command=f"scripts/export_student.py {args.run} (step {int(state['step'])})",
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        teacher=teacher,
    )
    save_model(MapModel(g.eval(), card), args.out)
    print(f"{args.out}: epoch {state['epoch']}, step {state['step']}")


if __name__ == "__main__":
    main()
