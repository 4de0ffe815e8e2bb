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

import csv
import dataclasses
import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from geomap_gan import __version__, files, formats
from geomap_gan.device import resolve_device
from geomap_gan.errors import CheckpointError, DatasetError, OutputError, OutputExistsError
from geomap_gan.model.modelfile import MapModel, ModelCard, save_model
from geomap_gan.model.nets import (
    UnetGenerator,
    receptive_radius,
)
from geomap_gan.training.config import TrainConfig
from geomap_gan.training.data import MapsDataset, aerial_quantiles, load_split
from geomap_gan.training.metrics import METRIC_KEYS, evaluate_arrays, save_sample_grid
from geomap_gan.training.process import Placement, git_commit, place_process
from geomap_gan.training.task import Pix2PixTask, recalibrate_batchnorm, unwrap

log = logging.getLogger(__name__)

# The files of a run folder that a fresh run must not silently replace or append to.
RUN_FILES = ("checkpoint.pt", "log.csv", "model.safetensors")
# What every checkpoint of this trainer holds (a file without them is not one).
CHECKPOINT_KEYS = ("G", "D", "opt_G", "opt_D", "epoch", "step", "rng_torch", "rng_numpy")
# A checkpoint must match the run it resumes in these fields (architecture and data layout).
ARCH_FIELDS = (
    "ngf", "ndf", "norm", "num_downs", "antialias", "direction", "crop_size", "load_size",
)  # fmt: skip


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """pix2pix 'linear' policy: 1 for ``epochs`` epochs, then linearly down to 0 (0-based epoch)."""
    return 1.0 - max(0, epoch + 1 - cfg.epochs) / float(cfg.epochs_decay + 1)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with files.atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _numpy_rng_state() -> tuple[torch.Tensor, int]:
    """numpy's global MT19937 state as tensors (loadable with weights_only=True)."""
    _, keys, pos, _, _ = np.random.get_state()
    return torch.from_numpy(keys.astype(np.int64)), int(pos)  # type: ignore[attr-defined]


class Trainer(Pix2PixTask):
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
        super().__init__(cfg, self.device, self.world)
        self.epoch = 0  # epochs completed
        self._apply_schedule()
        self.last_metrics: dict[str, float] = {}
        self._samples_overwrite = False  # replace sample grids of an earlier run (see fit)

    # ---- setup -------------------------------------------------------------------------------
    def _load_val(self) -> np.ndarray | None:
        """A fixed, evenly spaced subset of the val split at the crop size (None if absent)."""
        try:
            root = self.cfg.val_dir or self.cfg.data_dir
            pairs, _ = load_split(root, "val", self.cfg.crop_size, self.cfg.strict)
        except DatasetError as exc:
            if self.cfg.val_dir:  # asked for: training without it would pass silently
                raise DatasetError(f"--val-dir {self.cfg.val_dir}: {exc}") from exc
            log.warning("no validation: %s", exc)
            return None
        n = min(self.cfg.val_subset, len(pairs))
        return pairs[np.linspace(0, len(pairs) - 1, n).round().astype(int)]

    @property
    def is_main(self) -> bool:
        return self.rank == 0

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
            "G": unwrap(self.G).state_dict(),
            "D": unwrap(self.D).state_dict(),
            **({"G_ema": self.G_ema.state_dict()} if self.G_ema is not None else {}),
            **(
                {"adapters": self.feature_match.state_dict()}
                if self.feature_match is not None
                else {}
            ),
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
            raise CheckpointError(
                f"{path} is not a readable checkpoint ({_first_problem(exc)})"
            ) from exc
        if not isinstance(state, dict) or not all(k in state for k in CHECKPOINT_KEYS):
            what = type(state).__name__ if not isinstance(state, dict) else "other keys"
            raise CheckpointError(
                f"{path} is not a geomap-gan training checkpoint (it holds {what}); "
                "drop --resume, or use the --out of the run to continue"
            )
        saved: dict[str, Any] = state["config"] if isinstance(state.get("config"), dict) else {}
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
            unwrap(self.G).load_state_dict(state["G"])
            unwrap(self.D).load_state_dict(state["D"])
            if self.G_ema is not None:  # a run without an average starts one from its weights
                self.G_ema.load_state_dict(state["G_ema"] if "G_ema" in state else state["G"])
            if self.feature_match is not None and "adapters" in state:
                self.feature_match.load_state_dict(state["adapters"])
            self.opt_G.load_state_dict(state["opt_G"])
            self.opt_D.load_state_dict(state["opt_D"])
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{path} does not fit this architecture ({_first_problem(exc)}); pass the "
                "options it was trained with, or use another --out"
            ) from exc
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
        path.parent.mkdir(parents=True, exist_ok=True)
        files.check_output(path, self._samples_overwrite, (), formats.PNG)
        with files.atomic_output(path, self._samples_overwrite) as tmp:
            save_sample_grid(
                self.shipped_g, pairs, tmp, self.cfg.direction, self.device, self.cfg.amp
            )
        return path

    def _check_samples(self, replace: bool) -> None:
        """Before any training: ``out/samples`` is a folder or absent, and a fresh run without
        ``replace`` (--overwrite or --resume) refuses one that holds sample grids."""
        folder = self.out / "samples"
        if folder.exists() and not folder.is_dir():
            raise OutputError(
                f"{folder} exists and is not a folder (the run writes its sample grids there); "
                "move it away or choose another --out"
            )
        if not replace and folder.is_dir() and any(folder.glob("epoch_*.png")):
            raise OutputExistsError(
                f"{folder} holds sample grids of an earlier run; pass --overwrite to replace "
                "them, --resume to continue that run, or choose another --out"
            )
        self._samples_overwrite = replace

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
            teacher=self._teacher_card(),
        )
        g = self.shipped_g
        assert isinstance(g, UnetGenerator)
        return save_model(MapModel(g, card), self.out / "model.safetensors")

    def _teacher_card(self) -> dict[str, str]:
        """The card's provenance of a distilled model (empty without a teacher)."""
        if self.teacher is None or not self.cfg.teacher:
            return {}
        from geomap_gan.training.distill import teacher_provenance

        return teacher_provenance(
            self.teacher, self.cfg.teacher, self.teacher_sha, self.distill_recipe()
        )

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
        ds: torch.utils.data.Dataset
        if self.teacher is not None and cfg.teacher_cache:
            from geomap_gan.training.distill import DistillDataset, distill_pairs

            pairs, logits = distill_pairs(
                self.train_pairs, cfg, self.teacher, self.teacher_sha, self.device,
                self.out if self.is_main else None,
            )  # fmt: skip
            ds = DistillDataset(pairs, logits, cfg.crop_size, cfg.direction, cfg.augment)
        else:
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
            self._check_samples(resume or overwrite)
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
        for batch in loader:  # (input, map) or, distilling, (input, map, teacher's map)
            losses = self.train_step(*batch)
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
            try:
                if cfg.val_every and (self.epoch % cfg.val_every == 0 or last):
                    metrics = self.validate()
                    row.update({f"val_{k}": v for k, v in metrics.items()})
                    self.last_metrics = metrics
                    self.save_samples()
            finally:  # interrupted in validation, the epoch's checkpoint follows: log it first
                self._log_epoch(row)
            log.info(
                "epoch %d: %s",
                self.epoch,
                {k: round(v, 4) for k, v in row.items() if not isinstance(v, str)},
            )
            if cfg.save_every and self.epoch % cfg.save_every == 0:
                self.save_checkpoint()
        return self.last_metrics


def train(
    cfg: TrainConfig,
    resume: bool = False,
    command: str = "",
    progress: Callable[[dict[str, float]], None] | None = None,
) -> Path:
    """Set up this process (:func:`place_process`), train per ``cfg`` and return the exported
    model file's path: for a script that owns its process."""
    trainer = Trainer(cfg, place_process(cfg), progress=progress, command=command)
    trainer.fit(resume=resume)
    return trainer.out / "model.safetensors"


def _first_problem(exc: BaseException) -> str:
    """One line of torch's report (a state-dict mismatch lists every key on its own line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    detail = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    if len(detail) > 200:
        detail = detail[:197] + "..."
    more = len(lines) - 2 if lines[0].endswith(":") else len(lines) - 1
    return detail + (f" and {more} more" if more > 0 else "")
