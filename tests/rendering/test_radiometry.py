"""radiometry: quantiles, the domain distance and the harmonising lookup table; and the render
path's use of them (warning, --json, --harmonize) on a tiny generated scene."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from geotiffs import noise_rgb, write_geotiff

from geomap_gan.cli import cli
from geomap_gan.model.modelfile import MapModel, ModelCard, load_model, save_model
from geomap_gan.rendering.radiometry import (
    DOMAIN_WARNING_LEVELS,
    apply_lut,
    channel_quantiles,
    domain_distance,
    harmonizing_lut,
)


def test_lut_maps_a_hazed_image_back_onto_the_original_distribution():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (3, 200, 200)).astype(np.uint8)
    hazed = (clean * 0.5 + 110).astype(np.uint8)  # haze: contrast halved, brighter
    target = channel_quantiles(clean.reshape(3, -1))
    lut = harmonizing_lut(channel_quantiles(hazed.reshape(3, -1)), target)
    back = apply_lut(hazed, lut)
    assert domain_distance(channel_quantiles(hazed.reshape(3, -1)), target) > 40
    assert domain_distance(channel_quantiles(back.reshape(3, -1)), target) < 2
    assert (np.diff(lut.astype(int), axis=1) >= 0).all()  # monotonic per channel


def test_flat_scene_quantiles_give_a_monotonic_lut():
    flat = np.full((3, 1000), 7, np.uint8)
    lut = harmonizing_lut(
        channel_quantiles(flat), channel_quantiles(np.tile(np.arange(256), (3, 4)))
    )
    assert lut.shape == (3, 256) and (np.diff(lut.astype(int), axis=1) >= 0).all()


def test_far_scenes_are_warned_about_and_harmonize_changes_the_input(tmp_path, tiny_model_file):
    model = load_model(tiny_model_file)
    dark = np.tile(np.linspace(0, 255, 21), (3, 1)).tolist()  # training aerials: spread out
    card = ModelCard(**{**model.card.__dict__, "input_quantiles": dark})
    path = save_model(MapModel(model.generator, card), tmp_path / "m.safetensors")
    scene = write_geotiff(tmp_path / "bright.tif", (noise_rgb(40, 40) // 8 + 220).astype(np.uint8))
    outputs = []
    for flag in ("--no-harmonize", "--harmonize"):
        out = tmp_path / f"map{flag}.tif"
        result = CliRunner().invoke(cli, ["render", str(scene), str(out), "--model", str(path),
                                          "--overlap", "8", "--json", flag])  # fmt: skip
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["domain_distance"] > DOMAIN_WARNING_LEVELS
        assert len(data["warnings"]) == 1 and "far from the model's training" in data["warnings"][0]
        outputs.append(out.read_bytes())
    assert outputs[0] != outputs[1]  # the model saw other pixels
