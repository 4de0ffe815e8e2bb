"""The "Make training pairs" and "Fine-tune model" algorithms in a real, headless QGIS 3.22, the
engine in its own process (as tests/qgis/test_qgis_plugin.py does for render): the toolbox, pairs
from a raster layer and vector layers, a fine-tune that a cancel stops with a checkpoint kept and
a second run resumes. Skips without QGIS, except under CI=true, where it fails."""

# ruff: noqa: F811 (test_qgis_plugin's fixtures, imported, are the tests' parameters)

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from test_qgis_plugin import (  # noqa: F401 (fixtures)
    host,
    model_5m,
    naip,
    qgis_python,
)

from geomap_gan.training.pairs import DEFAULT_TILE, PairsOptions

pytestmark = pytest.mark.qgis


def _job(alg: str, params: dict[str, Any], cancel_at: float | None = None) -> dict[str, Any]:
    return {"alg": f"geomap_gan:{alg}", "params": params, "cancel_at": cancel_at}


def _layers(scene: Path, folder: Path) -> tuple[Path, Path]:
    """water.geojson (two rectangles) and coverage.geojson (the west 80%) in the scene's CRS."""
    with rasterio.open(scene) as ds:
        b, crs = ds.bounds, ds.crs.to_string()

    def collection(rings: list[list[list[float]]]) -> dict[str, Any]:
        return {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs}},
                "features": [{"type": "Feature", "properties": {}, "geometry": {
                    "type": "Polygon", "coordinates": [r]}} for r in rings]}  # fmt: skip

    def box(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]

    west = b.left + 0.8 * (b.right - b.left)
    water, cover = folder / "water.geojson", folder / "coverage.geojson"
    water.write_text(json.dumps(collection([
        box(b.left + 300, b.bottom + 300, b.left + 1200, b.bottom + 1500),
        box(b.left + 1800, b.top - 1400, b.left + 2400, b.top - 200)])))  # fmt: skip
    cover.write_text(json.dumps(collection([box(b.left, b.bottom, west, b.top)])))
    return water, cover


def test_toolbox_shows_pairs_and_finetune_with_the_engine_s_defaults(
    qgis_python,
    tmp_path,
):
    report = host(qgis_python, tmp_path, [{"describe": True}])
    algs = report["jobs"][0]
    assert algs["geomap_gan:pairs"]["name"] == "Make training pairs"
    assert algs["geomap_gan:finetune"]["name"] == "Fine-tune model"
    params = algs["geomap_gan:pairs"]["params"]
    opts = PairsOptions()
    assert (params["TILE"]["default"], params["STEP"]["default"]) == (DEFAULT_TILE, opts.step)
    assert params["VAL_SHARE"]["default"] == opts.val_share
    assert {"WATER", "PARK", "ROAD", "HIGHWAY", "MAP", "COVERAGE"} <= set(params)
    tune = algs["geomap_gan:finetune"]["params"]
    assert tune["FREEZE"]["options"] == ["none", "encoder"] and tune["FREEZE"]["advanced"]
    assert tune["DEVICE"]["static_strings"] is True
    assert report["modules"] == []


def test_pairs_then_finetune_cancel_keeps_a_checkpoint_and_a_second_run_resumes(
    qgis_python,
    tmp_path,
    naip,
    model_5m,
):
    water, cover = _layers(naip, tmp_path)
    pairs, run = tmp_path / "pairs", tmp_path / "run"
    made = _job("pairs", {"INPUT": str(naip), "WATER": str(water), "COVERAGE": str(cover),
                          "MODEL": str(model_5m), "STEP": 64, "OUTPUT": str(pairs)})  # fmt: skip
    tune = {"PAIRS": str(pairs), "MODEL": str(model_5m), "DEVICE": "cpu", "EPOCHS": 3,
            "EPOCHS_DECAY": 3, "OUTPUT": str(run)}  # fmt: skip
    report = host(qgis_python, tmp_path, [made, _job("finetune", tune, cancel_at=40.0),
                                          _job("finetune", tune)])  # fmt: skip
    made_job, cancelled, resumed = report["jobs"]
    assert "error" not in made_job, made_job.get("error")
    assert made_job["results"]["TRAIN"] >= 8 and made_job["results"]["VAL"] > 0
    manifest = json.loads((pairs / "pairs.json").read_text())
    assert manifest["gsd"] == 5.0 and manifest["layers"][0]["class"] == "water"
    assert manifest["coverage"] is not None
    assert any("--layer" in line and "water=" in line for line in made_job["infos"])

    assert cancelled["error"].startswith(f"cancelled; a checkpoint is kept in {run}")
    assert max(cancelled["progress"]) < 100
    assert "error" not in resumed, resumed.get("error")
    assert any("--resume" in line for line in resumed["infos"])
    model = Path(resumed["results"]["MODEL_FILE"])
    assert model == run / "model.safetensors" and model.is_file()
    assert resumed["results"]["UPDATES"] > 0
    record = json.loads((run / "finetune.json").read_text())
    assert record["pairs"]["scene"] == str(naip) and record["base_model"]["path"] == str(model_5m)
    with (run / "log.csv").open() as fh:
        epochs = [int(row.split(",")[0]) for row in fh.read().splitlines()[1:]]
    # each epoch at most once, the first from the cancelled run, the last from the resumed one
    # (an epoch cut between its end and its log row is not logged: the trainer's checkpoint
    # already counts it)
    assert epochs == sorted(set(epochs)) and epochs[0] == 1 and epochs[-1] == 6
    assert np.isfinite(resumed["results"]["VAL_MIOU"])
    assert report["modules"] == []


def test_pairs_engine_error_arrives_as_one_line(
    qgis_python,
    tmp_path,
    naip,
    model_5m,
):
    """A coverage outside the scene: the engine's one line, and no folder written."""
    far = tmp_path / "far.geojson"
    far.write_text(json.dumps({"type": "Polygon", "coordinates": [
        [[2.0, 48.0], [2.1, 48.0], [2.1, 48.1], [2.0, 48.1], [2.0, 48.0]]]}))  # fmt: skip
    water, _ = _layers(naip, tmp_path)
    out = tmp_path / "pairs"
    job = host(qgis_python, tmp_path, [_job("pairs", {
        "INPUT": str(naip), "WATER": str(water), "COVERAGE": str(far), "MODEL": str(model_5m),
        "OUTPUT": str(out)})])["jobs"][0]  # fmt: skip
    assert "does not overlap the scene" in job["error"] and "\n" not in job["error"]
    assert not out.exists()
