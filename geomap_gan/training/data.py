"""The pix2pix "maps" dataset: ``SPLIT/*.jpg``, each image the aerial photo (A, left half) beside
the map (B, right half).

Every pair is decoded once, resized to the load size and kept in memory as uint8 (about 0.5 GB
for the 1096 training pairs at 286 px): on a 2-core machine, decoding JPEGs every epoch would cost
more than the forward pass. Random crop and flip then happen on tensors, applied identically to
both halves, as in pix2pix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from geomap_gan.errors import DatasetError
from geomap_gan.model.nets import to_model_range
from geomap_gan.rendering.radiometry import channel_quantiles
from geomap_gan.training.augment import Augment, random_crop, random_dihedral, random_photometric

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
PAIR_ASPECT_TOLERANCE = 0.02  # width must be 2 x height within 2%
Direction = Literal["AtoB", "BtoA"]


@dataclass(frozen=True)
class LoadReport:
    """What loading a split found: pairs kept and files skipped as unreadable."""

    n_pairs: int
    skipped: tuple[str, ...]


def list_pairs(root: str | Path, split: str) -> list[Path]:
    """The image files of ``root/split``, sorted by numeric stem when stems are numbers."""
    root = Path(root)
    if root.is_file():
        raise DatasetError(f"{root} is a file; give the dataset folder (the one holding {split}/)")
    if not root.is_dir():
        raise DatasetError(
            f"dataset folder {root} does not exist; run `geomap-gan download maps {root}` first"
        )
    folder = root / split
    if not folder.is_dir() and root.name == split:  # given the split folder itself
        folder = root
    if not folder.is_dir():
        raise DatasetError(f"{root} has no '{split}' folder; expected {folder}/*.jpg (A|B pairs)")
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    special = next((p for p in files if not p.is_file()), None)  # a FIFO would block the read
    if special is not None:
        raise DatasetError(f"{special} is not a regular file (a FIFO, device or folder); remove it")
    if not files:
        raise DatasetError(f"split {folder} is empty; expected *.jpg images of A|B pairs")
    return sorted(files, key=lambda p: (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem))


def load_pair(path: Path, size: int) -> np.ndarray:
    """Decode one A|B image into a (2, size, size, 3) uint8 array (A then B), bicubic resize.

    Raises DatasetError when the image is not a side-by-side pair, OSError when it is unreadable.
    """
    from PIL import Image

    try:
        with Image.open(path) as opened:
            opened.load()  # raises OSError on truncated/corrupt data
            im = opened.convert("RGB")
    except Image.DecompressionBombError as exc:  # not an OSError: it would end the run
        raise OSError(f"larger than Pillow's decompression-bomb limit: {exc}") from exc
    w, h = im.size
    if w % 2 or abs(w / 2 - h) > PAIR_ASPECT_TOLERANCE * h:
        raise DatasetError(
            f"{path} is {w}x{h}: not an A|B pair (need an even width equal to twice the height)"
        )
    halves = [im.crop((0, 0, w // 2, h)), im.crop((w // 2, 0, w, h))]
    out = np.empty((2, size, size, 3), np.uint8)
    for i, half in enumerate(halves):
        if half.size != (size, size):
            half = half.resize((size, size), Image.Resampling.BICUBIC)
        out[i] = np.asarray(half)
    return out


def centre_crop(pairs: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` px of (N, 2, H, W, 3) pairs (a view): the fixed crop that
    BatchNorm re-estimation, gain fits and held-out scores use, so they draw no random numbers."""
    off = (pairs.shape[2] - size) // 2
    return pairs[:, :, off : off + size, off : off + size]


def load_split(
    root: str | Path, split: str, size: int, strict: bool = False, limit: int | None = None
) -> tuple[np.ndarray, LoadReport]:
    """All pairs of a split as one (N, 2, size, size, 3) uint8 array.

    Unreadable images are skipped with a warning (an error when ``strict``); malformed pairs are
    always an error, because they mean the folder is not a pix2pix dataset.
    """
    files = list_pairs(root, split)[:limit]
    arrays, skipped = [], []
    for path in files:
        try:
            arrays.append(load_pair(path, size))
        except DatasetError:
            raise
        except (OSError, SyntaxError, ValueError) as exc:
            if strict:
                raise DatasetError(
                    f"{path} is not a readable image ({exc}); fix or remove it"
                ) from exc
            log.warning("skipping unreadable image %s (%s)", path, exc)
            skipped.append(str(path))
    if not arrays:
        raise DatasetError(f"no readable pairs in {Path(root) / split}")
    if skipped:
        log.warning("skipped %d unreadable image(s) in %s", len(skipped), Path(root) / split)
    return np.stack(arrays), LoadReport(len(arrays), tuple(skipped))


def aerial_quantiles(pairs: np.ndarray, direction: Direction = "AtoB") -> list[list[float]]:
    """Per-channel quantiles (R, G, B rows, at radiometry.QUANTILE_LEVELS) of the input halves.

    Why: the model card carries the training aerials' distribution, so that the renderer can
    tell a scene far from it (domain warning) and map a scene's distribution onto it
    (radiometric harmonisation).
    """
    src = pairs[:, 0 if direction == "AtoB" else 1]
    flat = src.reshape(-1, 3)[:: max(1, src.size // 3 // 2_000_000)]  # about 2 M pixels
    q = channel_quantiles(flat.T)
    return [[round(float(v), 2) for v in row] for row in q]


class MapsDataset(Dataset):
    """Pairs as (input, target) float tensors (3, crop, crop) in [-1, 1].

    With ``train=True``: random crop of ``crop`` px from the load size and random horizontal flip,
    the same for both halves (pix2pix), plus whatever ``augment`` turns on (rotations, scale
    jitter for both halves; sensor changes for the aerial only). With ``train=False``: the whole
    load-size image, unchanged.
    """

    def __init__(
        self,
        pairs: np.ndarray,
        crop: int = 256,
        train: bool = True,
        direction: Direction = "AtoB",
        augment: Augment | None = None,
    ) -> None:
        # (N, 2, H, W, 3) -> (N, 6, H, W): channels first, A then B.
        n, _, h, w, _ = pairs.shape
        self.pairs = torch.from_numpy(pairs).permute(0, 1, 4, 2, 3).reshape(n, 6, h, w)
        self.crop = crop if train else h
        self.train = train
        self.direction = direction
        self.augment = augment or Augment()

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pairs[i]
        aug = self.augment.draw() if self.train else self.augment
        if not self.train:
            x = to_model_range(x)
        elif not (aug.scale or aug.dihedral or aug.any_pixel):
            x = to_model_range(random_crop(x, self.crop, 0.0))
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
        else:
            x = random_crop(x.float() / 255, self.crop, aug.scale)
            x = random_dihedral(x) if aug.dihedral else (x.flip(-1) if torch.rand(()) < 0.5 else x)
            aerial = 0 if self.direction == "AtoB" else 3
            x[aerial : aerial + 3] = random_photometric(x[aerial : aerial + 3], aug)
            x = x * 2 - 1
        a, b = x[:3], x[3:]
        return (a, b) if self.direction == "AtoB" else (b, a)
