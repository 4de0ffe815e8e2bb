"""TrainConfig: every training choice, in a module without torch, so that the CLI takes its
defaults from here (one home) and `geomap-gan train --help` stays instant."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from geomap_gan.errors import InputError
from geomap_gan.model.registry import (
    MAPS_ORIGINAL_GSD,
    MAPS_ORIGINAL_SIZE,
    NGF_RANGE,
    NUM_DOWNS_RANGE,
    TILE_SIZE_RANGE,
)

if TYPE_CHECKING:
    from geomap_gan.training.augment import Augment

GanMode = Literal["vanilla", "lsgan", "hinge"]


def opt(default: Any, help: str) -> Any:
    """A TrainConfig field with its command-line help: ``geomap-gan train`` makes one option of
    each field (cli.train), so a training option is written once, here."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Every training choice. Defaults are the pix2pix paper's (batch 1, 100 + 100 epochs)."""

    data_dir: str
    out_dir: str = opt("runs/maps", "Run folder.")
    val_dir: str | None = opt(None, "Folder with the val split (default DATA_DIR).")
    direction: Literal["AtoB", "BtoA"] = opt("AtoB", "Which half of each pair is the input.")
    ngf: int = opt(64, "Generator width.")
    ndf: int = opt(64, "Discriminator width.")
    norm: Literal["batch", "instance"] = opt("batch", "Normalisation layers.")
    num_downs: int = opt(8, "U-Net levels (8: pix2pix unet_256; 5-6 bound the receptive field).")
    antialias: bool = opt(
        False, "Blur before each subsampling (less dependence on the stride phase)."
    )
    init_from: str | None = opt(None, "Warm start G from this model file's tensors.")
    aug_dihedral: bool = opt(False, "The 8 rotations/flips.")
    aug_scale: float = opt(
        0.0, "Scale jitter: crop side x [1/(1+S), 1+S], resized to the crop size."
    )
    aug_photometric: bool = opt(
        False, "Brightness, contrast, gamma, saturation, hue, gain, haze (aerial only)."
    )
    aug_blur: bool = opt(False, "Optical blur of the aerial.")
    aug_noise: bool = opt(False, "Sensor noise on the aerial.")
    aug_jpeg: bool = opt(False, "JPEG artefacts on the aerial.")
    aug_clean: float = opt(
        0.0, "Share of samples trained without scale jitter or pixel changes (0 to 1)."
    )
    gan_mode: GanMode = opt("vanilla", "Adversarial loss.")
    lambda_gan: float = opt(
        1.0,
        "Weight of the adversarial (PatchGAN) term; 0: L1 and shift terms only, the discriminator is not run (about 4x cheaper an update on a CPU).",
    )
    lambda_l1: float = opt(100.0, "Weight of the L1 term.")
    lambda_shift: float = opt(
        0.0,
        "Weight of the shift-consistency term (G of the aerial moved by a random sub-stride offset against G's map moved alike; 0: off).",
    )
    road_weight: float = opt(
        0.0, "Extra weight of the L1 term on the real map's road pixels (1 + W there; 0: plain L1)."
    )
    highway_weight: float = opt(
        0.0,
        "Extra weight of the L1 terms (real map, and with --teacher the teacher's) on the target's highway pixels (1 + W there; 0: off).",
    )
    teacher: str | None = opt(
        None,
        "Distil from this model file: the student learns the teacher's maps of the training aerials (cached once per run) beside the real maps.",
    )
    teacher_scenes: str | None = opt(
        None,
        "With --teacher: also distil on these GeoTIFFs (comma-separated; not the scenes you evaluate on): tiles of --load-size px read as render reads them on the teacher's grid, where every pixel is valid, the teacher's map their only label.",
    )
    teacher_scene_tiles: int = opt(
        256, "With --teacher-scenes: at most this many tiles per scene, spread evenly over it."
    )
    lambda_teacher: float = opt(
        100.0, "With --teacher: weight of the road-weighted L1 to the teacher's map."
    )
    lambda_logit: float = opt(
        0.0,
        "With --teacher: weight of the road-weighted L1 to the teacher's output before its tanh, clipped to +-LOGIT_CLIP (the gradient that makes streets white does not fade near white).",
    )
    logit_clip: float = opt(3.0, "Clip of the teacher's pre-tanh output (tanh(3) is 254.4 grey).")
    lambda_iou: float = opt(
        0.0,
        "Weight of 1 - the soft map-class IoU (the legend's colour rules as sigmoids) against the real map's classes.",
    )
    lambda_iou_teacher: float = opt(
        0.0, "With --teacher: the same soft class-IoU term against the teacher's classes."
    )
    iou_tau: float = opt(6.0, "Width of the soft colour rules' sigmoids (grey levels).")
    lambda_feat: float = opt(
        0.0,
        "With --teacher: weight of feature matching (the student's inner levels through learned 1x1 adapters against the teacher's); runs the teacher at every update.",
    )
    feat_levels: int = opt(3, "With --lambda-feat: inner U-Net levels matched, outermost first.")
    teacher_cache: bool = opt(
        True,
        "With --teacher: compute the teacher's maps of the training pairs once (OUT/teacher_cache.npy) instead of at every update.",
    )
    d_warmup: int = opt(
        0,
        "Updates at the start of the run that train the discriminator only (G frozen): with --init-from, a fresh D learns before its gradients reach the warm-started G.",
    )
    ema_decay: float = opt(
        0.0,
        "Validate and export an exponential moving average of G's weights, updated after each G update with this decay (0: off, the last weights; 0.999 averages about 1000 updates).",
    )
    lr: float = opt(2e-4, "Adam learning rate.")
    beta1: float = opt(0.5, "Adam's beta1.")
    beta2: float = opt(0.999, "Adam's beta2.")
    epochs: int = opt(100, "Epochs at constant LR.")
    epochs_decay: int = opt(100, "Epochs of linear LR decay.")
    batch_size: int = opt(1, "Pairs per update.")
    load_size: int = opt(286, "Resize halves to this (px).")
    crop_size: int = opt(256, "Random crop (px).")
    amp: bool = opt(True, "bf16 where native.")
    workers: int = opt(0, "DataLoader workers.")
    seed: int = opt(0, "Seed of every random number generator.")
    save_every: int = opt(2, "Checkpoint every N epochs.")
    val_every: int = opt(1, "Validate every N epochs.")
    val_subset: int = opt(256, "Val pairs per validation.")
    samples: int = opt(8, "Val pairs drawn in each epoch sample grid.")
    bn_recalibrate: int = opt(
        400,
        "Training pairs used to re-estimate BatchNorm statistics before validation/export (0: off).",
    )
    source_gsd: float = opt(MAPS_ORIGINAL_GSD, "m/px of the source tiles.")
    source_size: int = opt(MAPS_ORIGINAL_SIZE, "px of the source tiles.")
    device: str = opt("auto", "auto, cpu, cuda or mps.")
    threads: int = opt(0, "CPU threads (0: all cores).")
    strict: bool = opt(False, "Unreadable images are an error, not skipped.")
    limit: int | None = opt(None, "Use only the first N training pairs.")
    max_steps: int | None = opt(None, "Stop after N updates.")
    name: str = opt("", "Model name for the card.")

    def __post_init__(self) -> None:
        """Refuse, before any data is read, settings that would crash mid-run (a traceback from
        BatchNorm or a convolution) or train a model that geomap-gan could not load (the model
        card's ranges, modelfile.ModelCard.validate)."""
        for ok, problem in (*self._shape_checks(), *self._schedule_checks()):
            if not ok:
                raise InputError(problem)

    def _shape_checks(self) -> tuple[tuple[bool, str], ...]:
        """(ok, problem) of the network's and the data's sizes."""
        stride = 2**self.num_downs
        (lo_d, hi_d), (lo_f, hi_f), (lo_t, hi_t) = NUM_DOWNS_RANGE, NGF_RANGE, TILE_SIZE_RANGE
        return (
            (
                lo_d <= self.num_downs <= hi_d,
                f"--num-downs must be {lo_d} to {hi_d}, got {self.num_downs}",
            ),
            (lo_f <= self.ngf <= hi_f, f"--ngf must be {lo_f} to {hi_f}, got {self.ngf}"),
            (lo_f <= self.ndf <= hi_f, f"--ndf must be {lo_f} to {hi_f}, got {self.ndf}"),
            (
                lo_t <= self.crop_size <= hi_t,
                f"--crop-size must be {lo_t} to {hi_t}, got {self.crop_size}",
            ),
            (self.batch_size >= 1, f"--batch-size must be 1 or more, got {self.batch_size}"),
            (
                self.crop_size >= stride and self.crop_size % stride == 0,
                f"--crop-size must be a multiple of 2**num_downs ({stride}), got "
                f"{self.crop_size}; pass --crop-size {stride * max(1, self.crop_size // stride)} "
                "or fewer --num-downs",
            ),
            (
                self.crop_size <= self.load_size <= hi_t,
                f"--load-size ({self.load_size}) must be at least --crop-size ({self.crop_size}) "
                f"and at most {hi_t} px",
            ),
            (
                0 <= self.samples <= 64 and 1 <= self.val_subset <= 100_000,
                f"--samples must be 0 (none) to 64 and --val-subset 1 to 100000, got "
                f"{self.samples} and {self.val_subset}",
            ),
        )

    def _schedule_checks(self) -> tuple[tuple[bool, str], ...]:
        """(ok, problem) of the schedule, the loss terms and their weights."""
        return (
            (
                min(self.epochs, self.epochs_decay) >= 0 and self.total_epochs >= 1,
                "--epochs and --epochs-decay must be 0 or more, and 1 or more together",
            ),
            (self.lr > 0, f"--lr must be above 0, got {self.lr}"),
            (
                min(self.road_weight, self.highway_weight) >= 0,
                f"--road-weight and --highway-weight must be 0 or more, got "
                f"{self.road_weight} and {self.highway_weight}",
            ),
            (
                0 <= self.aug_clean <= 1,
                f"--aug-clean must be 0 to 1 (a share of samples), got {self.aug_clean}",
            ),
            (
                min(
                    self.lambda_teacher,
                    self.lambda_logit,
                    self.lambda_iou,
                    self.lambda_iou_teacher,
                    self.lambda_feat,
                )
                >= 0,
                "the --lambda-* weights must be 0 or more",
            ),  # fmt: skip
            (self.logit_clip > 0, f"--logit-clip must be above 0, got {self.logit_clip}"),
            (self.iou_tau > 0, f"--iou-tau must be above 0, got {self.iou_tau}"),
            (self.feat_levels >= 1, f"--feat-levels must be 1 or more, got {self.feat_levels}"),
            (
                bool(self.teacher)
                or not (self.lambda_logit or self.lambda_iou_teacher or self.lambda_feat),
                "--lambda-logit, --lambda-iou-teacher and --lambda-feat need a --teacher",
            ),
            (
                not self.teacher_scenes
                or (bool(self.teacher) and self.teacher_cache and self.direction == "AtoB"),
                "--teacher-scenes needs a --teacher, its cache (no --no-teacher-cache) and "
                "--direction AtoB (the scenes are aerials)",
            ),
            (
                self.teacher_scene_tiles >= 1,
                f"--teacher-scene-tiles must be 1 or more, got {self.teacher_scene_tiles}",
            ),
            (self.d_warmup >= 0, f"--d-warmup must be 0 or more, got {self.d_warmup}"),
            (self.lambda_gan >= 0, f"--lambda-gan must be 0 or more, got {self.lambda_gan}"),
            (
                self.lambda_gan > 0 or self.d_warmup == 0,
                "--d-warmup trains the discriminator alone, which --lambda-gan 0 turns off; "
                "pass --d-warmup 0 or a --lambda-gan above 0",
            ),
            (
                0 <= self.ema_decay < 1,
                f"--ema-decay must be 0 (off) or above 0 and below 1, got {self.ema_decay}",
            ),
        )

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.epochs_decay

    @property
    def augment(self) -> Augment:
        from geomap_gan.training.augment import (
            Augment,  # torch: not needed to read a config (the CLI's --help)
        )

        return Augment(
            self.aug_dihedral,
            self.aug_scale,
            self.aug_photometric,
            self.aug_blur,
            self.aug_noise,
            self.aug_jpeg,
            self.aug_clean,
        )

    @property
    def gsd(self) -> float:
        """Metres per pixel of the training images at the load size."""
        return self.source_gsd * self.source_size / self.load_size
