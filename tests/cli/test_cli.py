"""CLI shell: version, info, evaluate, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from geomap_gan import __version__
from geomap_gan.cli import cli
from geomap_gan.training.metrics import METRIC_KEYS


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], err


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0 and __version__ in out


def test_info_json(tiny_model_file: Path) -> None:
    code, out, _ = run("info", str(tiny_model_file), "--json")
    assert code == 0
    card = json.loads(out)
    assert card["name"] == "tiny" and card["ngf"] == 8 and card["gsd"] == 2.0
    assert card["parameters"] > 0


def test_info_table(tiny_model_file: Path) -> None:
    code, out, _ = run("info", str(tiny_model_file))
    assert code == 0 and "tile_size" in out and "unet_256" in out


def test_info_missing_model(tmp_path: Path) -> None:
    code, _, err = run("info", str(tmp_path / "missing.safetensors"))
    assert_one_line_error(code, err, "does not exist")


def test_info_foreign_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_text("this is not a model")
    code, _, err = run("info", str(bad))
    assert_one_line_error(code, err, str(bad))


def test_evaluate_json_and_grid(tiny_model_file: Path, tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / "val" / f"{i}.jpg")
    grid = tmp_path / "grid.png"
    code, out, err = run(
        "evaluate", str(tmp_path), "--model", str(tiny_model_file), "--json", "--grid", str(grid)
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(METRIC_KEYS) <= set(result) and result["n"] == 3 and result["model"] == "tiny"
    assert 0 < result["rmse"] < 255
    assert Image.open(grid).size == (3 * 32, 3 * 32)


def test_evaluate_missing_split(tiny_model_file: Path, tmp_path: Path) -> None:
    code, _, err = run("evaluate", str(tmp_path), "--model", str(tiny_model_file))
    assert_one_line_error(code, err, "no 'val' folder")
