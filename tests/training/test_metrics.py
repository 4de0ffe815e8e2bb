"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geomap_gan.training.metrics import MetricAccumulator, class_masks


def _img(color: tuple[int, int, int], h: int = 16, w: int = 16) -> np.ndarray:
    return np.broadcast_to(np.array(color, np.uint8), (h, w, 3)).copy()


@pytest.mark.parametrize(
    "color,expected",
    [
        ((255, 255, 255), "road"),
        ((248, 250, 249), "road"),
        ((170, 218, 255), "water"),  # Google maps water
        ((200, 230, 190), "park"),  # G-R=30, G-B=40
        ((250, 160, 80), "highway"),
        ((242, 239, 233), None),  # background beige
    ],
)
def test_class_colours(color: tuple[int, int, int], expected: str | None) -> None:
    masks = class_masks(np.array([[color]], np.uint8))
    assert [k for k, m in masks.items() if m.all()] == ([expected] if expected else [])


def test_class_thresholds_are_inclusive_and_signed() -> None:
    # B - R computed signed: (R=250, B=220) must not wrap around to a large positive number.
    assert not class_masks(np.array([[[250, 0, 220]]], np.uint8))["water"].any()
    assert class_masks(np.array([[[180, 0, 220]]], np.uint8))["water"].all()  # B-R == 40
    assert not class_masks(np.array([[[181, 0, 220]]], np.uint8))["water"].any()


def test_pixel_metrics_by_hand() -> None:
    real = _img((100, 100, 100), 2, 2)[None]
    fake = real.copy()
    fake[0, 0, 0] = (104, 100, 100)  # max diff 4: within 5 and 10
    fake[0, 0, 1] = (100, 107, 100)  # max diff 7: within 10 only
    fake[0, 1, 0] = (100, 100, 120)  # max diff 20
    acc = MetricAccumulator()
    acc.update(fake, real)
    r = acc.result()
    sq = 4**2 + 7**2 + 20**2
    assert r["rmse"] == pytest.approx(math.sqrt(sq / 12))
    assert r["acc5"] == pytest.approx(2 / 4)
    assert r["acc10"] == pytest.approx(3 / 4)
    assert r["psnr"] == pytest.approx(10 * math.log10(255**2 / (sq / 12)))
    assert r["n"] == 1


def test_iou_accumulates_over_the_split() -> None:
    beige, white, blue = (242, 239, 233), (255, 255, 255), (170, 218, 255)
    real1 = _img(beige, 4, 4)
    real1[:2] = white  # 8 road pixels
    fake1 = _img(beige, 4, 4)
    fake1[:1] = white  # 4 road pixels, all correct
    real2 = _img(blue, 4, 4)  # 16 water
    fake2 = _img(blue, 4, 4)
    fake2[:, :1] = beige  # 12 water
    acc = MetricAccumulator()
    acc.update(np.stack([fake1, fake2]), np.stack([real1, real2]))
    r = acc.result()
    assert r["iou_road"] == pytest.approx(4 / 8)
    assert r["iou_water"] == pytest.approx(12 / 16)
    assert r["iou_park"] == 0.0 and r["iou_highway"] == 0.0
    assert r["miou"] == pytest.approx((0.5 + 0.75) / 4)


def test_identical_images_score_perfectly() -> None:
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    acc = MetricAccumulator()
    acc.update(real, real.copy())
    r = acc.result()
    assert r["rmse"] == 0 and r["acc5"] == 1 and r["psnr"] == 100.0
    assert r["ssim"] == pytest.approx(1.0)


def test_constant_image_has_zero_miou_and_lower_ssim() -> None:
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    const = np.full_like(real, 128)
    acc = MetricAccumulator()
    acc.update(const, real)
    assert acc.result()["ssim"] < 0.1


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError):
        MetricAccumulator().update(
            np.zeros((1, 2, 2, 3), np.uint8), np.zeros((1, 3, 2, 3), np.uint8)
        )
