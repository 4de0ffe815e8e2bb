"""Validation metrics on uint8 RGB maps, and ``evaluate`` over a whole split.

Pixel metrics reward blur (a constant beige image scores RMSE 19.0 and acc5 0.37 on maps val), so
the headline is the map-class IoU: each pixel of the generated and the real map is classed by its
colour (Google Maps style of the pix2pix dataset) and IoU is accumulated per class over the split.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from geomap_gan.legend import CLASSES, class_masks

METRIC_KEYS = (
    "rmse", "acc5", "acc10", "psnr", "ssim",
    *(f"iou_{c}" for c in CLASSES), "miou", "n",
)  # fmt: skip
MAX_GRID_COUNT = 64  # rows of a sample grid (each a 3-image row of tile-size pixels)
PSNR_CAP = 100.0  # dB for identical images, so one perfect tile does not make the mean infinite


def class_counts(fake: np.ndarray, real: np.ndarray) -> dict[str, tuple[int, int]]:
    """Per class, (intersection, union) pixel counts of the colour-rule masks of uint8 RGB maps."""
    fm, rm = class_masks(fake), class_masks(real)
    return {c: (int((fm[c] & rm[c]).sum()), int((fm[c] | rm[c]).sum())) for c in CLASSES}


def ssim_batch(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Gaussian window 11, sigma 1.5, channel mean) of (N, H, W, 3) uint8 batches."""
    from pytorch_msssim import ssim

    f = torch.from_numpy(fake).permute(0, 3, 1, 2).double()
    r = torch.from_numpy(real).permute(0, 3, 1, 2).double()
    return ssim(f, r, data_range=255, size_average=False).numpy()


@dataclass
class MetricAccumulator:
    """Accumulates metrics batch by batch so a whole split never has to sit in memory."""

    sq_err: float = 0.0
    values: int = 0
    pixels: int = 0
    within5: int = 0
    within10: int = 0
    psnrs: list[float] = field(default_factory=list)
    ssims: list[float] = field(default_factory=list)
    inter: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    union: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))

    def update(self, fake: np.ndarray, real: np.ndarray) -> None:
        """Add a batch: (N, H, W, 3) uint8 generated maps and their real maps."""
        if fake.shape != real.shape or fake.dtype != np.uint8 or real.dtype != np.uint8:
            raise ValueError("fake and real must be uint8 arrays of the same (N, H, W, 3) shape")
        diff = fake.astype(np.int32) - real.astype(np.int32)
        self.sq_err += float((diff.astype(np.int64) ** 2).sum())
        self.values += diff.size
        maxdiff = np.abs(diff).max(axis=-1)
        self.pixels += maxdiff.size
        self.within5 += int((maxdiff < 5).sum())
        self.within10 += int((maxdiff < 10).sum())
        mse = (diff.astype(np.float64) ** 2).reshape(len(diff), -1).mean(axis=1)
        for m in mse:
            self.psnrs.append(PSNR_CAP if m == 0 else min(PSNR_CAP, 10 * math.log10(255**2 / m)))
        self.ssims.extend(ssim_batch(fake, real).tolist())
        for c, (inter, union) in class_counts(fake, real).items():
            self.inter[c] += inter
            self.union[c] += union

    def result(self) -> dict[str, float]:
        """The metrics so far; IoU of a class absent from both sides counts as 0."""
        ious = {
            f"iou_{c}": self.inter[c] / self.union[c] if self.union[c] else 0.0 for c in CLASSES
        }
        return {
            "rmse": math.sqrt(self.sq_err / max(self.values, 1)),
            "acc5": self.within5 / max(self.pixels, 1),
            "acc10": self.within10 / max(self.pixels, 1),
            "psnr": float(np.mean(self.psnrs)) if self.psnrs else 0.0,
            "ssim": float(np.mean(self.ssims)) if self.ssims else 0.0,
            **ious,
            "miou": float(np.mean(list(ious.values()))),
            "n": len(self.psnrs),
        }


@contextmanager
def eval_mode(generator: torch.nn.Module) -> Iterator[None]:
    """The generator in eval mode (BatchNorm running statistics, no dropout) for the block, then
    back in the train/eval mode it had: a trainer calls these mid-run."""
    was_training = generator.training
    generator.eval()
    try:
        yield
    finally:
        generator.train(was_training)


@torch.no_grad()
def generate_uint8(
    generator: torch.nn.Module, images: np.ndarray, device: torch.device, amp: bool
) -> np.ndarray:
    """Run the generator on (N, H, W, 3) uint8 images; (N, H, W, 3) uint8 maps out."""
    from geomap_gan.device import autocast
    from geomap_gan.model.nets import to_model_range, to_uint8

    x = to_model_range(torch.from_numpy(images).permute(0, 3, 1, 2)).to(device)
    with autocast(device, amp):
        y = generator(x.contiguous(memory_format=torch.channels_last))
    return to_uint8(y).permute(0, 2, 3, 1).cpu().numpy()


def pair_sides(direction: str) -> tuple[int, int]:
    """Indexes of the (input, target) halves in a pair array for a direction."""
    return (0, 1) if direction == "AtoB" else (1, 0)


def sample_grid(inputs: np.ndarray, fakes: np.ndarray, reals: np.ndarray) -> np.ndarray:
    """One row per pair: input | generated | real, as an (H*n, 3W, 3) uint8 image."""
    rows = [np.concatenate(row, axis=1) for row in zip(inputs, fakes, reals, strict=True)]
    return np.concatenate(rows, axis=0)


def save_sample_grid(
    generator: torch.nn.Module,
    pairs: np.ndarray,
    path: str | Path,
    direction: str = "AtoB",
    device: str | torch.device = "cpu",
    amp: bool = True,
) -> Path:
    """Write a PNG of (N, 2, H, W, 3) uint8 pairs as rows of input | generated (eval mode) | real."""
    from PIL import Image

    src, dst = pair_sides(direction)
    with eval_mode(generator):
        fakes = generate_uint8(generator, pairs[:, src], torch.device(device), amp)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sample_grid(pairs[:, src], fakes, pairs[:, dst])).save(path, format="PNG")
    return path


def evaluate_arrays(
    generator: torch.nn.Module,
    pairs: np.ndarray,
    direction: str = "AtoB",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    amp: bool = True,
) -> dict[str, float]:
    """Metrics of a generator (switched to eval mode) on (N, 2, H, W, 3) uint8 pairs."""
    device = torch.device(device)
    src, dst = pair_sides(direction)
    acc = MetricAccumulator()
    with eval_mode(generator):
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            acc.update(generate_uint8(generator, batch[:, src], device, amp), batch[:, dst])
    return acc.result()


def evaluate(
    model_path: str | Path | None,
    data_dir: str | Path,
    split: str = "val",
    batch_size: int = 16,
    device: str = "auto",
    amp: bool = True,
    limit: int | None = None,
    grid: str | Path | None = None,
    grid_count: int = 8,
    overwrite: bool = False,
) -> dict[str, float | str]:
    """Evaluate a model file on every pair of ``data_dir/split`` at 256x256 (halves resized to
    the model's tile size, no crop, no flip). Returns the keys of METRIC_KEYS plus ``model``.
    With ``grid``, also writes a PNG of ``grid_count`` evenly spaced pairs (input | ours | real);
    an existing file there is replaced only with ``overwrite``, an image of the split never."""
    from geomap_gan import files, formats
    from geomap_gan.device import resolve_device
    from geomap_gan.errors import InputError
    from geomap_gan.model.modelfile import load_model
    from geomap_gan.training.data import list_pairs, load_split

    if grid is not None:
        if not 1 <= grid_count <= MAX_GRID_COUNT:
            raise InputError(f"--grid-count must be 1 to {MAX_GRID_COUNT} pairs, got {grid_count}")
        grid = files.check_output(grid, overwrite, list_pairs(data_dir, split), formats.PNG)
    dev = resolve_device(device)
    model = load_model(model_path, dev)
    pairs, _ = load_split(data_dir, split, model.card.tile_size, limit=limit)
    result: dict[str, float | str] = dict(
        evaluate_arrays(model.generator, pairs, model.card.direction, batch_size, dev, amp)
    )
    result["model"] = model.card.name
    if grid is not None:
        picks = np.linspace(0, len(pairs) - 1, min(grid_count, len(pairs))).round().astype(int)
        with files.atomic_output(grid, overwrite) as tmp:
            save_sample_grid(model.generator, pairs[picks], tmp, model.card.direction, dev, amp)
    return result
