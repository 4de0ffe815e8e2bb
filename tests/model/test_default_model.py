"""The bundled default model: its card, its size, and an end-to-end render of a real scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geomap_gan.cli import cli
from geomap_gan.legend import class_masks
from geomap_gan.model.modelfile import default_model_path, load_model
from geomap_gan.model.nets import receptive_radius
from geomap_gan.training.data import load_split
from geomap_gan.training.metrics import evaluate_arrays


def test_default_model_ships_in_the_package() -> None:
    path = default_model_path()
    assert path.is_file(), "geomap_gan/models/default.safetensors is missing"
    assert path.stat().st_size <= 30 * 2**20


def test_default_model_card() -> None:
    card = load_model().card
    assert card.arch == "unet_256" and card.ngf == 32 and card.tile_size == 256
    assert card.num_downs == 5 and card.antialias  # v2: a bounded receptive field
    assert card.receptive_field == receptive_radius(5, True)
    assert card.gsd == pytest.approx(0.9 * 600 / 286, rel=1e-3)
    assert card.command.startswith("geomap-gan") and " train " in card.command and card.git_commit
    assert "--aug-photometric" in card.command and "--aug-dihedral" in card.command
    assert np.asarray(card.input_quantiles).shape == (3, 21)
    assert card.metrics["n"] == 1098  # the card's figures are over the whole maps256 val split


def test_default_model_scores_as_its_card_says(maps256: Path) -> None:
    """Measured here on 96 evenly spaced val pairs (not read from the card): the subset's miou
    and road IoU are within 0.05 of the card's whole-split figures and above floors."""
    card = load_model().card
    pairs, _ = load_split(maps256, "val", 256)
    subset = pairs[np.linspace(0, len(pairs) - 1, 96).round().astype(int)]
    m = evaluate_arrays(load_model().generator, subset, "AtoB", 16, "cpu", True)
    assert m["miou"] >= 0.40 and m["iou_road"] >= 0.25 and m["iou_water"] >= 0.6
    assert abs(m["miou"] - card.metrics["miou"]) < 0.05
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
