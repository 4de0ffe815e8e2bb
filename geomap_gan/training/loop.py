"""The pix2pix trainer for A|B pair folders such as the "maps" dataset.

Faithful to pix2pix unless an option says otherwise: U-Net-256 generator, 70x70 PatchGAN on the
(condition, image) pair, GAN loss + lambda_L1 * L1, Adam(2e-4, 0.5, 0.999), constant learning rate
for ``epochs`` then linear decay to zero over ``epochs_decay``. Runs on one device or under
``torchrun`` with DistributedDataParallel (nccl on GPUs, gloo on CPU); only rank 0 writes.

A run folder holds ``checkpoint.pt`` (latest, written atomically), ``log.csv`` (losses and
validation metrics per epoch), ``samples/epoch_NNN.png`` (aerial | generated | real map) and, at
the end, ``model.safetensors`` with its model card.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import datetime as dt
import logging
import os
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from geomap_gan import __version__, files
from geomap_gan.device import autocast, configure_process, resolve_device
from geomap_gan.errors import CheckpointError, DatasetError, InputError
from geomap_gan.legend import ROAD_MIN
from geomap_gan.model.modelfile import MapModel, ModelCard, save_model
from geomap_gan.model.nets import (
    PatchDiscriminator,
    UnetGenerator,
    init_weights,
    receptive_radius,
    to_model_range,
)
from geomap_gan.training.config import GanMode, TrainConfig
from geomap_gan.training.data import MapsDataset, aerial_quantiles, centre_crop, load_split
from geomap_gan.training.metrics import METRIC_KEYS, evaluate_arrays, pair_sides, save_sample_grid

log = logging.getLogger(__name__)

# The files of a run folder that a fresh run must not silently replace or append to.
RUN_FILES = ("checkpoint.pt", "log.csv", "model.safetensors")
# A checkpoint must match the run it resumes in these fields (architecture and data layout).
ARCH_FIELDS = (
    "ngf", "ndf", "norm", "num_downs", "antialias", "direction", "crop_size", "load_size",
)  # fmt: skip


def gan_loss(
    pred: torch.Tensor, real: bool, mode: GanMode, for_discriminator: bool
) -> torch.Tensor:
    """The adversarial term for logits ``pred`` against target real/fake."""
    pred = pred.float()
    if mode == "vanilla":
        target = torch.ones_like(pred) if real else torch.zeros_like(pred)
        return F.binary_cross_entropy_with_logits(pred, target)
    if mode == "lsgan":
        return F.mse_loss(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))
    if for_discriminator:
        return F.relu(1 - pred).mean() if real else F.relu(1 + pred).mean()
    return -pred.mean()


def map_l1_loss(fake: torch.Tensor, real: torch.Tensor, road_weight: float) -> torch.Tensor:
    """L1 between generated and real maps (model range), weighted 1 + ``road_weight`` on the real
    map's road pixels (legend.ROAD_MIN in every channel) and normalised by the weights' sum.

    Why: the road class needs a pixel white in every channel; plain L1 lets a generator paint
    streets a few grey levels short of that (v4: 27% of real road pixels at 230-247, scored as
    missed), and roads are a small share of the pixels, so their error barely moves the mean.
    """
    err = (fake.float() - real.float()).abs()
    if road_weight == 0:
        return err.mean()
    road = (real.float() >= to_model_range(torch.tensor(float(ROAD_MIN)))).all(dim=1, keepdim=True)
    weight = 1.0 + road_weight * road.float()
    return (err * weight).sum() / (weight.sum() * err.shape[1])


def shift_consistency_loss(
    g: nn.Module, a: torch.Tensor, fake: torch.Tensor, stride: int, margin: int
) -> torch.Tensor:
    """L1 between G's map of the aerial moved by a random sub-stride offset and G's map moved alike.

    Why: a U-Net that subsamples by ``stride`` is exactly shift-equivariant only for moves that are
    multiples of it, so without this term the map of a scene depends on where its pixels fall on
    the render lattice (render_consistency's "moved by k"). Both sides keep their gradient (the
    property is symmetric); ``margin`` px at the crop's edges, where padding differs, are left out.
    """
    size = a.shape[-1] - stride  # still a multiple of the stride when the crop is
    dy, dx = (int(v) for v in torch.randint(1, stride, (2,)))
    moved = g(a[..., dy : dy + size, dx : dx + size])
    ref = fake[..., dy : dy + size, dx : dx + size]
    inner = (..., slice(margin, size - margin), slice(margin, size - margin))
    return F.l1_loss(moved[inner].float(), ref[inner].float())


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """pix2pix 'linear' policy: 1 for ``epochs`` epochs, then linearly down to 0 (0-based epoch)."""
    return 1.0 - max(0, epoch + 1 - cfg.epochs) / float(cfg.epochs_decay + 1)


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


@torch.no_grad()
def recalibrate_batchnorm(
    g: nn.Module, pairs: np.ndarray, cfg: TrainConfig, device: torch.device
) -> None:
    """Replace BatchNorm running statistics by their plain average over batches of centre-cropped
    training inputs, at the training batch size, with dropout off.

    Why: rendering runs G in eval mode (tile outputs must not depend on batch neighbours), but
    the exponential running averages of a GAN generator describe its batch statistics badly. On
    maps val after 2 epochs (ngf=32, batch 4) this raised miou from 0.09 to 0.28. Deterministic:
    fixed crops, no random numbers drawn, so resuming stays exact.
    """
    bns = [m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was_training, momenta = g.training, [m.momentum for m in bns]
    g.eval()  # dropout off
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches seen
        m.train()
    src, _ = pair_sides(cfg.direction)
    crops = torch.from_numpy(centre_crop(pairs, cfg.crop_size)[:, src]).permute(0, 3, 1, 2)
    n = max(cfg.batch_size, 2)  # a batch of 1 at 1x1 resolution has no variance
    for start in range(0, len(crops) - n + 1, n):
        x = to_model_range(crops[start : start + n]).to(device)
        with autocast(device, cfg.amp):
            g(x.contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    g.train(was_training)


def warm_start(g: UnetGenerator, path: str | Path) -> int:
    """Copy into ``g`` every tensor of the model file at ``path`` whose name and shape match, and
    the innermost level's up-convolution and norm from the file's innermost level.

    Why: a shallower U-Net shares all its outer levels with a deeper one (same names, same
    shapes), so a model trained for hours keeps what it knows about roads and parks; only the
    levels that were cut need learning again. Returns the number of tensors copied.
    """
    from geomap_gan.model.modelfile import load_model

    src = load_model(path).generator.state_dict()
    dst = g.state_dict()
    inner_src, inner_dst = _innermost_prefix(src), _innermost_prefix(dst)
    copied = 0
    for key, value in dst.items():
        candidate = src.get(key)
        if key.startswith(inner_dst) and key[len(inner_dst) :].split(".")[0] in {"3", "4"}:
            candidate = src.get(inner_src + key[len(inner_dst) :])
        if candidate is not None and candidate.shape == value.shape:
            value.copy_(candidate.to(value.dtype))
            copied += 1
    log.info("warm start from %s: %d of %d tensors copied", path, copied, len(dst))
    return copied


def _innermost_prefix(state: dict[str, torch.Tensor]) -> str:
    """The key prefix of a U-Net state dict's innermost block (the deepest 'model.' nesting)."""
    deepest = max(state, key=lambda k: k.count("model."))
    return deepest[: deepest.rindex("model.") + len("model.")]


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with files.atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _numpy_rng_state() -> tuple[torch.Tensor, int]:
    """numpy's global MT19937 state as tensors (loadable with weights_only=True)."""
    _, keys, pos, _, _ = np.random.get_state()  # type: ignore[misc]
    return torch.from_numpy(keys.astype(np.int64)), int(pos)  # type: ignore[attr-defined]


def _unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


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


class Trainer:
    """Owns the networks, optimisers and run folder of one training run."""

    def __init__(
        self,
        cfg: TrainConfig,
        place: Placement | None = None,
        progress: Callable[[dict[str, float]], None] | None = None,
        command: str = "",
    ) -> None:
        """``place`` comes from :func:`place_process` (the CLI, a torchrun worker); without it
        the run is one process on ``cfg.device`` and the caller has seeded the RNGs, if at all."""
        self.cfg = cfg
        self.progress = progress
        self.command = command
        self.out = Path(cfg.out_dir)
        place = place or Placement(0, 1, resolve_device(cfg.device))
        self.rank, self.world, self.device = place.rank, place.world, place.device
        self.train_pairs, report = load_split(
            cfg.data_dir, "train", cfg.load_size, cfg.strict, cfg.limit
        )
        self.skipped = report.skipped
        self.val_pairs = self._load_val()
        generator = UnetGenerator(
            ngf=cfg.ngf, num_downs=cfg.num_downs, norm=cfg.norm, antialias=cfg.antialias
        )
        init_weights(generator)
        if cfg.init_from:
            warm_start(generator, cfg.init_from)
        self.G: nn.Module = generator
        self.D = init_weights(PatchDiscriminator(ndf=cfg.ndf, norm=cfg.norm))
        for net in (self.G, self.D):
            net.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        # The weight average that validation, samples and export use when --ema-decay is set.
        self.G_ema: nn.Module | None = None
        if cfg.ema_decay > 0:
            self.G_ema = copy.deepcopy(generator).eval().requires_grad_(False)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G = nn.parallel.DistributedDataParallel(self.G, device_ids=ids)
            # D runs twice before its backward (fake, real): broadcasting its BatchNorm buffers
            # at the second call bumps tensors the first one saved (autograd error on torch
            # 2.11). Its running statistics are never used (D is never in eval mode).
            self.D = nn.parallel.DistributedDataParallel(
                self.D, device_ids=ids, broadcast_buffers=False
            )
        betas = (cfg.beta1, cfg.beta2)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=betas)
        self.epoch = 0  # epochs completed
        self.step = 0  # optimiser updates completed
        self._apply_schedule()
        self.last_metrics: dict[str, float] = {}

    # ---- setup -------------------------------------------------------------------------------
    def _load_val(self) -> np.ndarray | None:
        """A fixed, evenly spaced subset of the val split at the crop size (None if absent)."""
        try:
            root = self.cfg.val_dir or self.cfg.data_dir
            pairs, _ = load_split(root, "val", self.cfg.crop_size, self.cfg.strict)
        except DatasetError as exc:
            log.warning("no validation: %s", exc)
            return None
        n = min(self.cfg.val_subset, len(pairs))
        return pairs[np.linspace(0, len(pairs) - 1, n).round().astype(int)]

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shipped_g(self) -> nn.Module:
        """The generator that validation, samples and export see: the weight average with
        ``--ema-decay``, else the trained weights."""
        return self.G_ema if self.G_ema is not None else _unwrap(self.G)

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Move the average a step towards G's new weights.

        Why: a GAN generator's weights wander with the discriminator from update to update; their
        running average is a smoother, usually better generator (Yazici et al. 2019; neutral on
        a 450-update restart from v9: README, the v14 candidate), at the cost of one lerp per
        tensor. Buffers (BatchNorm statistics) are copied, then recalibrated for
        the average before it is validated or exported."""
        assert self.G_ema is not None
        g, decay = _unwrap(self.G), self.cfg.ema_decay
        for avg, p in zip(self.G_ema.parameters(), g.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - decay)
        for buf, b in zip(self.G_ema.buffers(), g.buffers(), strict=True):
            buf.copy_(b)

    # ---- one update --------------------------------------------------------------------------
    def train_step(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
        """One pix2pix update: D on (real, detached fake), then G on
        lambda_gan * GAN + lambda_l1 * L1 (+ lambda_shift * shift).

        During the first ``d_warmup`` updates G is not updated (its losses are still computed
        and logged): a warm-started G otherwise meets a discriminator from scratch, whose first
        gradients are uninformed (on v6 it did not prevent the val drop after a rate restart:
        README, the v8 candidate). With ``lambda_gan`` 0 the discriminator is neither run nor
        updated (its losses log as nan): an update costs a quarter on a CPU, but the classes
        scored worse from v9 (README, the v15 candidates)."""
        cfg = self.cfg
        a = a.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        b = b.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        train_g, adversarial = self.step >= cfg.d_warmup, cfg.lambda_gan > 0
        with autocast(self.device, cfg.amp), torch.set_grad_enabled(train_g):
            fake = self.G(a)
        nan = float("nan")
        d_real, d_fake = self._d_step(a, b, fake.detach()) if adversarial else (nan, nan)

        d_plain = _unwrap(self.D)  # G's step must not touch D's DDP reducer or D's grads
        d_plain.requires_grad_(False)
        with autocast(self.device, cfg.amp), torch.set_grad_enabled(train_g):
            loss_g_gan = torch.zeros((), device=self.device)
            if adversarial:
                pred = d_plain(torch.cat([a, fake], 1))
                loss_g_gan = gan_loss(pred, True, cfg.gan_mode, False)
            loss_g_l1 = map_l1_loss(fake, b, cfg.road_weight)
            loss_g = cfg.lambda_gan * loss_g_gan + cfg.lambda_l1 * loss_g_l1
            loss_shift = torch.zeros((), device=self.device)
            if cfg.lambda_shift > 0 and train_g:  # plain G: a second DDP forward breaks DDP
                stride = 2**cfg.num_downs
                loss_shift = shift_consistency_loss(_unwrap(self.G), a, fake, stride, stride)
                loss_g = loss_g + cfg.lambda_shift * loss_shift
        if train_g:
            self.opt_G.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_G.step()
            if self.G_ema is not None:
                self._update_ema()
        d_plain.requires_grad_(True)
        self.step += 1
        return {
            "G_GAN": loss_g_gan.item() if adversarial else nan,
            "G_L1": loss_g_l1.item(),
            "G_shift": loss_shift.item(),
            "D_real": d_real,
            "D_fake": d_fake,
        }

    def _d_step(self, a: torch.Tensor, b: torch.Tensor, fake: torch.Tensor) -> tuple[float, float]:
        """One discriminator update on (aerial, real map) against (aerial, ``fake`` detached);
        returns its real and fake losses."""
        cfg = self.cfg
        with autocast(self.device, cfg.amp):
            loss_fake = gan_loss(self.D(torch.cat([a, fake], 1)), False, cfg.gan_mode, True)
            loss_real = gan_loss(self.D(torch.cat([a, b], 1)), True, cfg.gan_mode, True)
            loss_d = 0.5 * (loss_fake + loss_real)
        self.opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_D.step()
        return loss_real.item(), loss_fake.item()

    # ---- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        """Everything needed to continue exactly: nets, optimisers, counters, RNG (the learning
        rate follows from the epoch and the resuming run's config, see ``_apply_schedule``)."""
        if not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            "G": _unwrap(self.G).state_dict(),
            "D": _unwrap(self.D).state_dict(),
            **({"G_ema": self.G_ema.state_dict()} if self.G_ema is not None else {}),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng_torch": torch.get_rng_state(),
            "rng_numpy": _numpy_rng_state(),
            "rng_python": list(random.getstate()[1]),
            "config": dataclasses.asdict(self.cfg),
            "version": __version__,
        }
        _atomic_torch_save(state, self.checkpoint_path)
        log.info("checkpoint saved at epoch %d (%s)", self.epoch, self.checkpoint_path)

    def load_checkpoint(self) -> None:
        """Resume from ``out_dir/checkpoint.pt``; the architecture must match this config."""
        path = self.checkpoint_path
        if not path.is_file():
            raise CheckpointError(f"nothing to resume: {path} does not exist; drop --resume")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path} is not a readable checkpoint ({exc})") from exc
        saved = state.get("config", {})
        diffs = [
            f"{k}={saved.get(k)!r} (now {getattr(self.cfg, k)!r})"
            for k in ARCH_FIELDS
            if saved.get(k) != getattr(self.cfg, k)
        ]
        if diffs:
            raise CheckpointError(
                f"{path} was trained with a different setup: {', '.join(diffs)}; "
                "pass the same options or use another --out"
            )
        try:
            _unwrap(self.G).load_state_dict(state["G"])
            _unwrap(self.D).load_state_dict(state["D"])
            if self.G_ema is not None:  # a run without an average starts one from its weights
                self.G_ema.load_state_dict(state.get("G_ema", state["G"]))
        except RuntimeError as exc:
            raise CheckpointError(f"{path} does not fit this architecture ({exc})") from exc
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self._apply_schedule()
        torch.set_rng_state(state["rng_torch"])
        keys, pos = state["rng_numpy"]
        np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), int(pos), 0, 0.0))
        random.setstate((3, tuple(state["rng_python"]), None))
        self._drop_log_rows_after(self.epoch)
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)

    def _apply_schedule(self) -> None:
        """Set the next epoch's learning rate from ``--lr``, the schedule and the epoch.

        Derived, not stored: a checkpoint's rate is the one of the schedule it was trained with
        (0 after a finished decay), and a resume with more epochs or another ``--lr`` must
        follow its own schedule from its first epoch.
        """
        rate = self.cfg.lr * lr_factor(self.epoch, self.cfg)
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = rate

    def _drop_log_rows_after(self, epoch: int) -> None:
        """Keep log.csv's rows up to ``epoch``: a run killed after logging an epoch but before
        checkpointing it reruns that epoch, which must not appear twice."""
        path = self.out / "log.csv"
        if not self.is_main or not path.exists():
            return
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        keep = [r for r in rows if int(float(r["epoch"])) <= epoch]
        if len(keep) == len(rows):
            return
        with files.atomic_output(path) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(keep)

    # ---- validation, samples, export ---------------------------------------------------------
    def recalibrate_batchnorm(self) -> None:
        """Re-estimate G's BatchNorm running statistics over training batches (see module
        function); a no-op for InstanceNorm or when ``bn_recalibrate`` is 0."""
        cfg = self.cfg
        if cfg.norm == "batch" and cfg.bn_recalibrate > 0:
            recalibrate_batchnorm(
                self.shipped_g, self.train_pairs[: cfg.bn_recalibrate], cfg, self.device
            )

    def validate(self, recalibrate: bool = True) -> dict[str, float]:
        """Metrics of G in eval mode (as rendering uses it) on the fixed val subset, after
        recalibrating its BatchNorm statistics (as the exported model will be; ``recalibrate``
        False when that was just done)."""
        if self.val_pairs is None:
            return {}
        if recalibrate:
            self.recalibrate_batchnorm()
        return evaluate_arrays(
            self.shipped_g, self.val_pairs, self.cfg.direction, 16, self.device, self.cfg.amp
        )

    def save_samples(self) -> Path | None:
        """PNG grid of the first ``samples`` val pairs: input | generated | real."""
        if self.val_pairs is None or self.cfg.samples <= 0:
            return None
        path = self.out / "samples" / f"epoch_{self.epoch:03d}.png"
        pairs = self.val_pairs[: self.cfg.samples]
        save_sample_grid(self.shipped_g, pairs, path, self.cfg.direction, self.device, self.cfg.amp)
        return path

    def export(self, metrics: dict[str, float]) -> Path:
        """Write ``model.safetensors`` (fp16 generator + card) into the run folder."""
        cfg = self.cfg
        card = ModelCard(
            name=cfg.name or f"pix2pix-maps-ngf{cfg.ngf}",
            ngf=cfg.ngf,
            num_downs=cfg.num_downs,
            antialias=cfg.antialias,
            receptive_field=receptive_radius(cfg.num_downs, cfg.antialias),
            input_quantiles=aerial_quantiles(self.train_pairs, cfg.direction),
            norm=cfg.norm,
            tile_size=cfg.crop_size,
            gsd=round(cfg.gsd, 4),
            direction=cfg.direction,
            dataset=str(cfg.data_dir),
            epochs=self.epoch,
            command=self.command,
            date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            git_commit=git_commit(),
            metrics={k: round(float(v), 4) for k, v in metrics.items()},
        )
        g = self.shipped_g
        assert isinstance(g, UnetGenerator)
        return save_model(MapModel(g, card), self.out / "model.safetensors")

    def _log_epoch(self, row: dict[str, float]) -> None:
        path = self.out / "log.csv"
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    # ---- the loop ----------------------------------------------------------------------------
    def _loader(self) -> torch.utils.data.DataLoader:
        cfg = self.cfg
        ds = MapsDataset(self.train_pairs, cfg.crop_size, True, cfg.direction, cfg.augment)
        sampler: torch.utils.data.DistributedSampler | None = None
        if self.world > 1:
            sampler = torch.utils.data.DistributedSampler(ds, seed=self.cfg.seed, drop_last=True)
        return torch.utils.data.DataLoader(
            ds,
            batch_size=self.cfg.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=self.cfg.workers,
            drop_last=len(ds) >= self.cfg.batch_size * self.world,
            persistent_workers=self.cfg.workers > 0,
        )

    def fit(self, resume: bool = False, overwrite: bool = False) -> dict[str, float]:
        """Train to ``total_epochs``; Ctrl-C saves a checkpoint (the interrupted epoch reruns).

        A fresh run (no ``resume``) refuses an ``out_dir`` that holds an earlier run's files
        (checkpoint, log, model) unless ``overwrite``, which removes them first: a model or a
        log is never replaced or appended to by accident.
        """
        if self.out.exists() and not self.out.is_dir():
            raise CheckpointError(f"--out {self.out} is a file; give a folder for the run")
        earlier = [self.out / n for n in RUN_FILES if (self.out / n).exists()]
        if resume:
            self.load_checkpoint()
        elif self.is_main and earlier and not overwrite:
            raise CheckpointError(
                f"{earlier[0]} exists (an earlier run); pass --resume to continue it, "
                "--overwrite to start over, or choose another --out"
            )
        elif self.is_main:
            for path in earlier:
                path.unlink()
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        try:
            metrics = self._fit()
        except Exception:
            if self.is_main and not resume and not self.checkpoint_path.exists():
                self._discard_run_files()
            raise
        if self.world > 1:
            dist.barrier()
        return metrics

    def _fit(self) -> dict[str, float]:
        cfg = self.cfg
        loader = self._loader()
        metrics: dict[str, float] = {}
        try:
            while self.epoch < cfg.total_epochs and not self._step_limit_reached():
                metrics = self._run_epoch(loader)
        except KeyboardInterrupt:
            log.warning("interrupted: saving a checkpoint at epoch %d", self.epoch)
            self.save_checkpoint()
            raise
        if self.is_main:
            self.recalibrate_batchnorm()  # once: the checkpoint, the metrics and the export agree
            self.save_checkpoint()
            metrics = self.validate(recalibrate=False) or metrics
            self.export(metrics)
        return metrics

    def _discard_run_files(self) -> None:
        """A fresh run that failed before its first checkpoint (a full disk, bad data) leaves
        none of the files that make a later run in the same ``--out`` refuse to start."""
        for name in RUN_FILES:
            (self.out / name).unlink(missing_ok=True)

    def _step_limit_reached(self) -> bool:
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps

    def _run_epoch(self, loader: torch.utils.data.DataLoader) -> dict[str, float]:
        cfg = self.cfg
        if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
            loader.sampler.set_epoch(self.epoch)
        self.G.train()
        self.D.train()
        sums: dict[str, float] = {}
        lr = self.opt_G.param_groups[0]["lr"]  # this epoch's: the next is set at its end
        n, t0 = 0, time.perf_counter()
        for a, b in loader:
            losses = self.train_step(a, b)
            n += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            if self.progress and self.is_main:
                self.progress(
                    {"epoch": self.epoch + 1, "batch": n, "batches": len(loader), **losses}
                )
            if self._step_limit_reached():
                break
        seconds = time.perf_counter() - t0
        self.epoch += 1
        self._apply_schedule()
        row: dict[str, float] = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": lr,
            **{k: v / max(n, 1) for k, v in sums.items()},
            "seconds": round(seconds, 2),
            "img_per_s": round(n * cfg.batch_size * self.world / max(seconds, 1e-9), 2),
        }
        if self.is_main:
            last = self.epoch == cfg.total_epochs
            if self.val_pairs is not None:  # same columns every row: blank when not validated
                row.update({f"val_{k}": "" for k in METRIC_KEYS})  # type: ignore[misc]
            if cfg.val_every and (self.epoch % cfg.val_every == 0 or last):
                metrics = self.validate()
                row.update({f"val_{k}": v for k, v in metrics.items()})
                self.last_metrics = metrics
                self.save_samples()
            self._log_epoch(row)
            log.info(
                "epoch %d: %s", self.epoch, {k: round(v, 4) for k, v in row.items() if v != ""}
            )
            if cfg.save_every and self.epoch % cfg.save_every == 0:
                self.save_checkpoint()
        return self.last_metrics


def train(cfg: TrainConfig, resume: bool = False, command: str = "", progress=None) -> Path:
    """Set up this process (:func:`place_process`), train per ``cfg`` and return the exported
    model file's path: for a script that owns its process."""
    trainer = Trainer(cfg, place_process(cfg), progress=progress, command=command)
    trainer.fit(resume=resume)
    return trainer.out / "model.safetensors"
