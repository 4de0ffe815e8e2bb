"""TrainConfig: every training choice, in a module without torch, so that the CLI takes its
defaults from here (one home) and `geomap-gan train --help` stays instant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from geomap_gan.errors import InputError

if TYPE_CHECKING:
    from geomap_gan.training.augment import Augment

GanMode = Literal["vanilla", "lsgan", "hinge"]
# pix2pix maps: 600 px originals at about 0.905 m/px (Google z17 at New York's latitude).
MAPS_ORIGINAL_GSD = 0.9
MAPS_ORIGINAL_SIZE = 600
# The generator sizes a model card may declare (modelfile.ModelCard.validate), inclusive: the
# trainer refuses to train outside them, since the renderer would refuse the model it exports.
NGF_RANGE = (1, 256)
NUM_DOWNS_RANGE = (5, 9)
TILE_SIZE_RANGE = (32, 4096)


@dataclass(frozen=True)
class TrainConfig:
    """Every training choice. Defaults are the pix2pix paper's (batch 1, 100 + 100 epochs)."""

    data_dir: str
    out_dir: str = "runs/maps"
    val_dir: str | None = None  # folder holding the val split; default data_dir
    direction: Literal["AtoB", "BtoA"] = "AtoB"
    ngf: int = 64
    ndf: int = 64
    norm: Literal["batch", "instance"] = "batch"
    num_downs: int = 8  # U-Net levels; fewer bound the receptive field (nets.UnetGenerator)
    antialias: bool = False  # blur before each subsampling (nets.BlurDownConv)
    init_from: str | None = None  # warm start: a model file whose matching tensors G starts from
    aug_dihedral: bool = False  # the 8 rotations/flips (augment.Augment)
    aug_scale: float = 0.0  # scale jitter around the model GSD, e.g. 0.2 for 1/1.2 to 1.2
    aug_photometric: bool = False  # brightness, contrast, gamma, saturation, hue, gain, haze
    aug_blur: bool = False
    aug_noise: bool = False
    aug_jpeg: bool = False
    aug_clean: float = 0.0  # share of samples with no scale jitter and no pixel change
    gan_mode: GanMode = "vanilla"
    lambda_gan: float = 1.0  # adversarial term; 0: L1 (and shift) only, D not run (4x cheaper)
    lambda_l1: float = 100.0
    lambda_shift: float = 0.0  # shift consistency: G(move(x)) = move(G(x)) for sub-stride moves
    road_weight: float = 0.0  # extra L1 weight on the real map's road pixels (train.map_l1_loss)
    d_warmup: int = 0  # first updates of a run that train D only (G frozen): for a warm start
    ema_decay: float = 0.0  # G's exponential moving average per update (0: off; e.g. 0.999)
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    epochs: int = 100
    epochs_decay: int = 100
    batch_size: int = 1
    load_size: int = 286
    crop_size: int = 256
    amp: bool = True
    workers: int = 0
    seed: int = 0
    save_every: int = 2
    val_every: int = 1
    val_subset: int = 256
    samples: int = 8
    bn_recalibrate: int = 400  # training pairs used to re-estimate BN statistics (0: off)
    source_gsd: float = MAPS_ORIGINAL_GSD
    source_size: int = MAPS_ORIGINAL_SIZE
    device: str = "auto"
    threads: int = 0
    strict: bool = False
    limit: int | None = None
    max_steps: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        """Refuse, before any data is read, settings that would crash mid-run (a traceback from
        BatchNorm or a convolution) or train a model that geomap-gan could not load (the model
        card's ranges, modelfile.ModelCard.validate)."""
        stride = 2**self.num_downs
        (lo_d, hi_d), (lo_f, hi_f), (lo_t, hi_t) = NUM_DOWNS_RANGE, NGF_RANGE, TILE_SIZE_RANGE
        for ok, problem in (
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
                self.load_size >= self.crop_size,
                f"--load-size ({self.load_size}) must be at least --crop-size ({self.crop_size})",
            ),
            (
                min(self.epochs, self.epochs_decay) >= 0 and self.total_epochs >= 1,
                "--epochs and --epochs-decay must be 0 or more, and 1 or more together",
            ),
            (self.lr > 0, f"--lr must be above 0, got {self.lr}"),
            (self.road_weight >= 0, f"--road-weight must be 0 or more, got {self.road_weight}"),
            (
                0 <= self.aug_clean <= 1,
                f"--aug-clean must be 0 to 1 (a share of samples), got {self.aug_clean}",
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
        ):
            if not ok:
                raise InputError(problem)

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
