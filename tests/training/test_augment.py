"""augment: the training augmentations change the aerial only (photometric) or both halves alike
(geometric), stay in range, and the benchmark shifts are fixed (seeded, repeatable)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from geomap_gan.training.augment import SHIFTS, Augment, haze, jpeg, random_crop, random_dihedral
from geomap_gan.training.data import MapsDataset


def pairs(n: int = 4, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (n, 1, size, size, 3), dtype=np.uint8)
    return np.concatenate([a, a], axis=1)  # map == aerial: geometric changes must keep that


def test_geometric_augmentations_move_both_halves_alike():
    torch.manual_seed(0)
    ds = MapsDataset(pairs(), 48, True, augment=Augment(dihedral=True, scale=0.2))
    for i in range(4):
        a, b = ds[i]
        assert a.shape == b.shape == (3, 48, 48)
        torch.testing.assert_close(a, b)


def test_photometric_augmentations_change_the_aerial_only_and_stay_in_range():
    torch.manual_seed(1)
    ds = MapsDataset(pairs(), 48, True, augment=Augment.full())
    changed = 0
    for _ in range(20):
        a, b = ds[0]
        assert a.min() >= -1 and a.max() <= 1 and b.min() >= -1 and b.max() <= 1
        changed += not torch.allclose(a, b, atol=2 / 255)
    assert changed >= 10  # most draws change the aerial, never the map's geometry


def test_dihedral_draws_all_eight_and_crop_resizes_to_the_crop():
    x = torch.arange(16.0).view(1, 4, 4)
    torch.manual_seed(0)
    seen = {tuple(random_dihedral(x).flatten().tolist()) for _ in range(200)}
    assert len(seen) == 8
    assert random_crop(torch.rand(3, 64, 64), 32, 0.5).shape == (3, 32, 32)


def test_benchmark_shifts_are_fixed_and_do_something():
    x = torch.rand(3, 32, 32)
    for shift in SHIFTS:
        y1, y2 = shift.apply(x.clone()), shift.apply(x.clone())
        torch.testing.assert_close(y1, y2)  # seeded: the same every run
        assert not torch.allclose(y1.clamp(0, 1), x, atol=1e-3), shift.name
    assert haze(x, 1.0).std() < 0.05  # full haze is the airlight alone
    assert (jpeg(x, 50) - x).abs().mean() > 0


def _unaltered(a: torch.Tensor, b: torch.Tensor) -> bool:
    """A pair as pix2pix would give it: the aerial still equals the map (no pixel change) and
    holds the source's grey levels (no resizing)."""
    levels = (a + 1) * 127.5
    return torch.equal(a, b) and torch.allclose(levels, levels.round(), atol=1e-4)


def test_clean_share_trains_that_share_of_samples_unaltered():
    torch.manual_seed(2)
    full = Augment.full()
    kept = MapsDataset(pairs(), 48, True, augment=dataclasses.replace(full, clean=1.0))
    assert all(_unaltered(*kept[i % 4]) for i in range(40))
    half = MapsDataset(pairs(), 48, True, augment=dataclasses.replace(full, clean=0.5))
    share = sum(_unaltered(*half[i % 4]) for i in range(200)) / 200
    assert 0.4 <= share <= 0.6  # the altered draws almost never come out unaltered
    none = MapsDataset(pairs(), 48, True, augment=full)
    assert sum(_unaltered(*none[i % 4]) for i in range(100)) <= 5
