"""The maps dataset loader: pairs, crops, flips and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geomap_gan.errors import DatasetError
from geomap_gan.model.nets import to_model_range, to_uint8
from geomap_gan.training.data import MapsDataset, load_split


def make_pairs(root: Path, n: int = 3, size: int = 40, split: str = "train") -> Path:
    """n A|B JPEGs: A is a left-to-right gradient, B a constant colour per pair."""
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = np.tile(np.linspace(0, 255, size, dtype=np.uint8)[None, :, None], (size, 1, 3))
        b = np.full((size, size, 3), 40 * (i + 1), np.uint8)
        Image.fromarray(np.concatenate([a, b], axis=1)).save(folder / f"{i + 1}.jpg", quality=95)
    return root


def test_load_split_resizes_halves(tmp_path: Path) -> None:
    pairs, report = load_split(make_pairs(tmp_path, 3, 40), "train", 32)
    assert pairs.shape == (3, 2, 32, 32, 3) and pairs.dtype == np.uint8
    assert report.n_pairs == 3 and report.skipped == ()
    assert abs(int(pairs[1, 1].mean()) - 80) <= 2  # B half of pair 2


def test_numeric_order(tmp_path: Path) -> None:
    make_pairs(tmp_path, 11, 8)
    from geomap_gan.training.data import list_pairs

    assert [p.stem for p in list_pairs(tmp_path, "train")][:3] == ["1", "2", "3"]


def test_train_crop_and_flip_apply_to_both_halves(tmp_path: Path) -> None:
    pairs, _ = load_split(make_pairs(tmp_path, 1, 40), "train", 36)
    pairs[0, 1] = pairs[0, 0]  # B == A, so any mismatch in crop/flip would show
    ds = MapsDataset(pairs, crop=32, train=True)
    torch.manual_seed(0)
    flips = 0
    for _ in range(20):
        a, b = ds[0]
        assert a.shape == (3, 32, 32) and torch.equal(a, b)
        flips += int(a[0, 0, 0] > a[0, 0, -1])  # gradient reversed
    assert 0 < flips < 20


def test_direction_btoa_swaps(tmp_path: Path) -> None:
    pairs, _ = load_split(make_pairs(tmp_path, 1, 32), "train", 32)
    a, b = MapsDataset(pairs, train=False, direction="AtoB")[0]
    inp, target = MapsDataset(pairs, train=False, direction="BtoA")[0]
    assert torch.equal(inp, b) and torch.equal(target, a)


def test_range_round_trip() -> None:
    x = torch.arange(256, dtype=torch.uint8)
    y = to_model_range(x)
    assert y.min() == -1 and y.max() == 1
    assert torch.equal(to_uint8(y), x)


def test_missing_folder_says_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="geomap-gan download maps"):
        load_split(tmp_path / "nope", "train", 32)


def test_empty_split(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        load_split(tmp_path, "train", 32)


def test_not_a_pair(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "train" / "1.jpg")
    with pytest.raises(DatasetError, match="not an A\\|B pair"):
        load_split(tmp_path, "train", 32)


def test_corrupt_jpeg_skipped_or_strict(tmp_path: Path) -> None:
    make_pairs(tmp_path, 2, 32)
    data = (tmp_path / "train" / "2.jpg").read_bytes()
    (tmp_path / "train" / "2.jpg").write_bytes(data[: len(data) // 3])
    pairs, report = load_split(tmp_path, "train", 32)
    assert len(pairs) == 1 and len(report.skipped) == 1
    with pytest.raises(DatasetError, match="not a readable image"):
        load_split(tmp_path, "train", 32, strict=True)


def test_real_maps_pairs(maps286: Path) -> None:
    pairs, _ = load_split(maps286, "train", 286, limit=4)
    assert pairs.shape == (4, 2, 286, 286, 3)
    # the map half is mostly light (background beige/white), the aerial half darker
    assert pairs[:, 1].mean() > pairs[:, 0].mean()
