"""Process set-up for a training run (torchrun group, device, threads, seeds) and provenance: all of
it process-wide, so it belongs to whoever owns the process, never to a Trainer."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from geomap_gan.device import configure_process, resolve_device
from geomap_gan.errors import InputError
from geomap_gan.training.config import TrainConfig

log = logging.getLogger(__name__)


def git_commit() -> str:
    """The source tree's commit, for provenance; empty when not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one training process runs: its rank among ``world`` processes, and its device."""

    rank: int
    world: int
    device: torch.device


def place_process(cfg: TrainConfig) -> Placement:
    """Set up this process to train per ``cfg`` and say where it runs.

    Why apart from :class:`Trainer`: everything here is process-wide (the torchrun process
    group, the current CUDA device, torch's threads, the global RNGs), so it belongs to whoever
    owns the process (the CLI, a torchrun worker script, a test), not to a library object.
    Under torchrun, each rank joins the group (nccl on GPUs, gloo on CPU), takes its local GPU,
    shares the CPU cores with the other ranks of its machine, and seeds with ``seed + rank``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(cfg.device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if device.type == "cuda" and world > 1:
        device = _local_gpu()
        torch.cuda.set_device(device)
    if device.type == "cpu":  # beside a GPU, torch's own thread pool feeds the data
        configure_process(device, cfg.threads, share=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    seed_process(cfg.seed + rank)
    return Placement(rank, world, device)


def _local_gpu() -> torch.device:
    """This torchrun rank's GPU on its machine (LOCAL_RANK), or an InputError if there is none."""
    rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if rank >= gpus:
        raise InputError(
            f"torchrun started more processes on this machine than it has GPUs ({gpus}); "
            f"use --nproc_per_node={gpus}, or --device cpu"
        )
    return torch.device("cuda", rank)


def seed_process(seed: int) -> None:
    """Seed Python's, numpy's and torch's global RNGs (weights, dropout, crops, augmentations)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
