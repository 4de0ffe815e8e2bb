"""Probe, bounded values: every number a user or a model card can pass is checked against the
range the code can honour, before anything is allocated, and refused in one line; card fields
the renderer does not compute with must hold what it implements. The cases of issue 39 and
others of the same promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio.shutil
from geotiffs import noise_rgb, write_geotiff
from probe_util import refused, small_dataset

from geomap_gan import formats
from geomap_gan.errors import InputError
from geomap_gan.model.modelfile import CARD_KEY, FORMAT


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_geotiff(tmp_path / "scene.tif", noise_rgb(40, 50))


@pytest.fixture
def model(tiny_model_file: Path) -> list[object]:
    return ["--model", tiny_model_file, "--overlap", "8", "--device", "cpu"]


# ---- GDAL creation options: every numeric option of every format, out of range -------------------
def _numeric_cases() -> list[tuple[str, str, str]]:
    cases = []
    for name in formats.RENDER_FORMATS:
        for option, (lo, hi) in formats.FORMATS[name].numbers.items():
            for value in (str(lo - 1), str(hi + 1), "abc", "nan", "-5", "1e9", "9" * 30):
                cases.append((name, option, value))
    return cases


@pytest.mark.parametrize(("fmt", "option", "value"), _numeric_cases())
def test_numeric_creation_options_are_bounded_before_gdal_sees_them(fmt, option, value):
    """Issue 39: BLOCKXSIZE=65536 and COG BLOCKSIZE=1000000 asked GDAL for ~27 GB."""
    from geomap_gan.rendering.output import check_creation_options

    with pytest.raises(InputError, match=f"{option} must be a whole number from"):
        check_creation_options(fmt, {option.lower(): value})


def test_the_issues_creation_options_through_the_cli(tmp_path, scene, model):
    for fmt, co in (("GTiff", ["BLOCKXSIZE=65536", "BLOCKYSIZE=65536"]),
                    ("COG", ["BLOCKSIZE=1000000"])):  # fmt: skip
        args = [a for c in co for a in ("--co", c)]
        refused(["render", scene, tmp_path / "map.tif", "--format", fmt, *args, *model],
                "must be a whole number from", tmp_path)  # fmt: skip


def test_creation_options_at_their_bounds_are_accepted():
    from geomap_gan.rendering.output import check_creation_options

    check_creation_options("GTiff", {"BLOCKXSIZE": "4096", "BLOCKYSIZE": "16", "ZLEVEL": "12"})
    check_creation_options("COG", {"BLOCKSIZE": "128", "LEVEL": "1"})
    with pytest.raises(InputError, match="multiple of 16"):
        check_creation_options("GTiff", {"BLOCKXSIZE": "100"})


# ---- render, render-many, evaluate, download options -------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "1000000000"], "--batch-size must be 0 (auto) to 4096"),
        (["--threads", "1000000"], "--threads must be 0 (auto) to"),
        (["--window", "1000000000"], "--window must be 64 to 8192"),
        (["--overlap", "1000000"], "--overlap must be 0 to"),
        (["--gsd", "nan"], "--gsd must be a positive number"),
        (["--gsd", "inf"], "--gsd must be a positive number"),
        (["--gsd", "1e-9"], "--gsd must be a positive number"),
        (["--scale", "nan,1"], "--scale needs"),
        (["--scale", "0,inf"], "--scale needs"),
        (["--strips", "1000000000"], "--strips must be 1 to"),
    ],
)
def test_render_numbers_are_bounded(tmp_path, scene, model, args, message):
    refused(["render", scene, tmp_path / "map.tif", *model, *args], message, tmp_path)


def test_render_many_workers_are_bounded(tmp_path, scene, model):
    (tmp_path / "o").mkdir()
    refused(["render-many", scene, "--out-dir", tmp_path / "o", "--workers", "1000000", *model],
            "--workers must be 1 to 1024", tmp_path)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid-count", "0"], "--grid-count must be 1 to 64"),
        (["--grid-count", "-1"], "--grid-count must be 1 to 64"),
        (["--grid-count", "65"], "--grid-count must be 1 to 64"),
        (["--batch-size", "0"], "--batch-size must be 1 to"),
        (["--batch-size", "1000000000"], "--batch-size must be 1 to"),
    ],
)
def test_evaluate_numbers_are_bounded(tmp_path, tiny_model_file, args, message):
    """Issue 39: `evaluate --grid-count 0` raised a traceback."""
    data = small_dataset(tmp_path / "maps")
    refused(["evaluate", data, "--model", tiny_model_file, "--grid", tmp_path / "g.png", *args],
            message, tmp_path)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "nan"], "--timeout must be"),
        (["--timeout", "-1"], "--timeout must be"),
        (["--timeout", "inf"], "--timeout must be"),
        (["--retries", "-1"], "--retries must be"),
        (["--retries", "100000"], "--retries must be"),
    ],
)
def test_download_numbers_are_bounded(tmp_path, args, message):
    refused(["download", "maps", tmp_path / "maps", "--url", "http://127.0.0.1:9/m.tar.gz",
             *args], message, tmp_path)  # fmt: skip


# ---- georeferencing and AOIs --------------------------------------------------------------------
@pytest.mark.parametrize(
    "transform",
    [
        "nan, 2.0, 0.0, 5000000.0, 0.0, -2.0",
        "500000.0, nan, 0.0, 5000000.0, 0.0, -2.0",
        "500000.0, 2.0, 0.0, inf, 0.0, -2.0",
        "500000.0, 0.0, 0.0, 5000000.0, 0.0, -2.0",
        "500000.0, 2.0, 0.0, 5000000.0, 0.0, 0.0",
        "500000.0, 1e308, 0.0, 5000000.0, 0.0, -1e308",
    ],
)
def test_an_unusable_geotransform_is_one_line(tmp_path, scene, model, transform):
    """Issue 39: a NaN in the geotransform raised a traceback."""
    import re

    vrt = tmp_path / "bad.vrt"
    rasterio.shutil.copy(scene, vrt, driver="VRT")
    text = re.sub(r"<GeoTransform>[^<]*</GeoTransform>",
                  f"<GeoTransform>{transform}</GeoTransform>", vrt.read_text())  # fmt: skip
    vrt.write_text(text)
    refused(["render", vrt, tmp_path / "map.tif", *model], "Error: ", tmp_path)


@pytest.mark.parametrize("depth", [50, 1_000, 100_000])
@pytest.mark.parametrize("inline", [True, False])
def test_a_deeply_nested_aoi_is_one_line(tmp_path, scene, model, depth, inline):
    """Issue 39: a deeply nested --aoi GeoJSON raised RecursionError."""
    text = '{"type": "Polygon", "coordinates": ' + "[" * depth + "]" * depth + "}"
    aoi = text if inline and depth < 10_000 else str(tmp_path / "aoi.geojson")
    if aoi != text:
        Path(aoi).write_text(text)
    refused(["render", scene, tmp_path / "map.tif", "--aoi", aoi, *model], "AOI", tmp_path)


def test_an_aoi_file_too_large_is_refused_without_reading_it(tmp_path, scene, monkeypatch):
    from geomap_gan.rendering import aoi

    monkeypatch.setattr(aoi, "MAX_AOI_BYTES", 1000)
    big = tmp_path / "big.geojson"
    big.write_text('{"type": "Polygon", "coordinates": []}' + " " * 2000)
    with pytest.raises(InputError, match="is over"):
        aoi.parse_aoi(str(big))


# ---- the model card ------------------------------------------------------------------------------
def _card_file(tiny: Path, path: Path, **changes: object) -> Path:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(tiny), framework="pt") as f:
        card = json.loads(f.metadata()[CARD_KEY])
    card.update(changes)
    save_file(load_file(str(tiny)), str(path),
              metadata={"format": FORMAT, CARD_KEY: json.dumps(card)})  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("band_order", "BGR", "band_order='BGR' is not one the renderer implements"),
        ("band_order", 3, "band_order=3"),
        ("normalisation", "x/255", "normalisation='x/255'"),
        ("direction", "sideways", "direction='sideways'"),
        ("direction", None, "direction=None"),
        ("metrics", {"miou": "high"}, "metric miou is 'high', not a number"),
        ("metrics", {"miou": float("nan")}, "metric miou=nan is outside"),
        ("metrics", {"miou": 2.0}, "metric miou=2.0 is outside 0.0..1.0"),
        ("metrics", {"rmse": -1}, "metric rmse=-1 is outside"),
        ("metrics", {"n": True}, "metric n is True"),
        ("metrics", {"bogus": 1.0}, "unknown key 'bogus'"),
        ("metrics", [1, 2], "metrics is list"),
        ("name", {"a": 1}, "field name is not text"),
        ("command", "x" * 70_000, "field command is not text of at most"),
    ],
)
def test_card_fields_hold_what_the_renderer_implements(tmp_path, tiny_model_file, field, value,
                                                       message):  # fmt: skip
    """Issue 39: band_order, normalisation and direction were accepted with any value and
    ignored; metrics were never validated."""
    bad = _card_file(tiny_model_file, tmp_path / "bad.safetensors", **{field: value})
    refused(["info", bad], message, tmp_path)


def test_a_card_with_every_implemented_value_loads(tmp_path, tiny_model_file):
    from geomap_gan.model.modelfile import load_model

    good = _card_file(tiny_model_file, tmp_path / "good.safetensors", direction="BtoA",
                      metrics={"miou": 0.5, "rmse": 16.0, "psnr": 25.0, "ssim": -0.1, "n": 10})  # fmt: skip
    assert load_model(good).card.direction == "BtoA"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--load-size", "1000000"], "--load-size (1000000) must be at least"),  # asked 5 TiB
        (["--samples", "1000000000"], "--samples must be 0 (none) to 64"),
        (["--samples", "-1"], "--samples must be 0 (none) to 64"),
        (["--val-subset", "0"], "--val-subset 1 to 100000"),
        (["--lr", "nan"], "--lr must be above 0"),
    ],
)
def test_train_numbers_are_bounded_before_any_data_is_read(tmp_path, args, message):
    from probe_util import TRAIN_TINY

    data = small_dataset(tmp_path / "maps")
    refused(["train", data, "--out", tmp_path / "run", *TRAIN_TINY, *args], message, tmp_path)
