"""The bundled default model: its card, its size, and an end-to-end render of a real scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geomap_gan.cli import cli
from geomap_gan.metrics import class_masks
from geomap_gan.modelfile import default_model_path, load_model


def test_default_model_ships_in_the_package() -> None:
    path = default_model_path()
    assert path.is_file(), "geomap_gan/models/default.safetensors is missing"
    assert path.stat().st_size <= 30 * 2**20


def test_default_model_card() -> None:
    card = load_model().card
    assert card.arch == "unet_256" and card.ngf == 32 and card.tile_size == 256
    assert card.gsd == pytest.approx(0.9 * 600 / 286, rel=1e-3)
    assert card.command.startswith("geomap-gan") and " train " in card.command and card.git_commit
    m = card.metrics
    assert m["n"] == 1098  # evaluated on the whole maps256 val split
    assert m["miou"] >= 0.30 and min(m["iou_road"], m["iou_water"], m["iou_park"]) >= 0.20
    assert m["rmse"] < 19.0  # the constant-colour baseline


def test_render_real_scene_with_default_model(geotiff_dir: Path, tmp_path: Path) -> None:
    src = geotiff_dir / "naip_nd_2015.tif"
    dst = tmp_path / "map.tif"
    result = CliRunner().invoke(cli, ["-q", "render", str(src), str(dst)])
    assert result.exit_code == 0, result.output
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert b.crs == a.crs
        for x, y in zip(a.bounds, b.bounds, strict=True):  # same footprint (to a model pixel)
            assert abs(x - y) <= b.res[0]
        assert b.res[0] == pytest.approx(0.9 * 600 / 286, rel=0.01)  # written at the model GSD
        rgb = np.moveaxis(b.read([1, 2, 3]), 0, -1)
        photo = np.moveaxis(a.read([1, 2, 3]), 0, -1)
        valid = b.dataset_mask() > 0
    # A map, not a photo: light background dominates, and map classes (roads, parks...) appear.
    assert rgb[valid].mean() > photo.mean() + 30
    masks = class_masks(rgb[valid])
    assert sum(m.mean() for m in masks.values()) > 0.02
