"""Run by tests/test_train.py under torchrun: a few DDP steps, then each rank dumps its weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from geomap_gan.training.config import TrainConfig
from geomap_gan.training.loop import Trainer
from geomap_gan.training.process import place_process


def main(data_dir: str, out_dir: str) -> None:
    cfg = TrainConfig(
        data_dir=data_dir, out_dir=out_dir, ngf=4, ndf=8, batch_size=2, epochs=1, epochs_decay=0,
        load_size=264, max_steps=3, threads=1, val_every=0, samples=0, amp=False, device="cpu",
    )  # fmt: skip
    trainer = Trainer(cfg, place_process(cfg))
    trainer.fit()
    g = trainer.G.module.state_dict()
    torch.save(g, Path(out_dir) / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
