"""``geomap-gan render``: success paths reopened with rasterio, and every bad input as a one-line
error with exit code 2, no traceback and no partial output."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from geotiffs import noise_rgb, write_geotiff
from rasterio.enums import ColorInterp

from geomap_gan.cli import cli


@pytest.fixture
def run(tiny_model_file):
    def invoke(*args: str):
        argv = ["render", *map(str, args), "--model", str(tiny_model_file), "--overlap", "8"]
        return CliRunner().invoke(cli, argv)

    return invoke


@pytest.fixture
def scene(tmp_path) -> Path:
    data = noise_rgb(70, 90)
    data[data == 0] = 1
    data[:, :, :10] = 0  # a nodata collar
    return write_geotiff(tmp_path / "scene.tif", data, nodata=0)


def test_render_writes_a_georeferenced_rgba_map(run, scene, tmp_path):
    out = tmp_path / "map.tif"
    result = run(scene, out, "--quiet")
    assert result.exit_code == 0, result.output
    with rasterio.open(scene) as s, rasterio.open(out) as o:
        assert o.crs == s.crs and o.transform == s.transform and o.bounds == s.bounds
        assert (o.count, o.dtypes[0]) == (4, "uint8")
        assert list(o.colorinterp) == [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                                       ColorInterp.alpha]  # fmt: skip
        assert ((o.read(4) == 0) == (s.dataset_mask() == 0)).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "map.tif",
        "scene.tif",
        "tiny.safetensors",
    ]


def test_render_json_and_cog(run, scene, tmp_path):
    out = tmp_path / "map.tif"
    result = run(scene, out, "--json", "--format", "COG", "--bands", "3,2,1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["width"] == 90 and data["windows"] > 0 and data["crs"] == "EPSG:32631"
    with rasterio.open(out) as o:
        assert o.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def test_progress_bar_and_summary(run, scene, tmp_path):
    result = run(scene, tmp_path / "m.tif")
    assert result.exit_code == 0, result.output
    assert "win" in result.stderr and "render" in result.stderr  # the bar
    assert "wrote" in result.stdout and "MP/s" in result.stdout  # the summary


def test_verbose_prints_the_summary_once_and_q_is_quiet(tiny_model_file, scene, tmp_path, caplog):
    model = ["--model", str(tiny_model_file), "--overlap", "8"]
    with caplog.at_level(logging.INFO):  # what -v shows (pytest holds the root logger)
        result = CliRunner().invoke(
            cli, ["-v", "render", str(scene), str(tmp_path / "v.tif"), *model]
        )
    assert result.exit_code == 0, result.output
    logged = [r.getMessage() for r in caplog.records]
    assert any("device cpu" in m for m in logged)  # the plan line
    assert result.stdout.count("wrote ") == 1 and not any("wrote " in m for m in logged)
    quiet = CliRunner().invoke(cli, ["render", str(scene), str(tmp_path / "q.tif"), "-q", *model])
    assert quiet.exit_code == 0 and quiet.stdout == "" and "render" not in quiet.stderr


def test_the_command_quiet_is_the_global_quiet(geotiff_dir, tmp_path):
    """In a real process, `render ... -q` silences warnings as `geomap-gan -q render` does (the
    small 4.5 m scene draws the domain warning from the bundled model)."""
    import subprocess
    import sys

    scene = geotiff_dir / "rgb_small_4p5m.tif"
    base = [sys.executable, "-m", "geomap_gan"]

    def stderr(*args: str) -> str:
        proc = subprocess.run([*base, *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    assert "far from the model's training aerials" in stderr(
        "render", str(scene), str(tmp_path / "a.tif")
    )
    assert stderr("render", str(scene), str(tmp_path / "b.tif"), "-q") == ""
    assert stderr("-q", "render", str(scene), str(tmp_path / "c.tif")) == ""


def _bad_cases(tmp_path: Path, scene: Path) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "text.tif").write_text("not a raster")
    grey = write_geotiff(tmp_path / "grey.tif", noise_rgb(20, 20, bands=1))
    plain = write_geotiff(tmp_path / "plain.tif", noise_rgb(20, 20), crs=None)
    data = noise_rgb(100, 100, seed=2)
    deflate = write_geotiff(tmp_path / "d.tif", data, compress="deflate", tiled=True,
                            blockxsize=32, blockysize=32)  # fmt: skip
    raw = deflate.read_bytes()
    (tmp_path / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    out = str(tmp_path / "out.tif")
    far = "POLYGON((0 0, 1 0, 1 1, 0 1, 0 0))"
    existing = tmp_path / "existing.tif"
    existing.write_bytes(b"the user's own file")
    return {
        "missing": ([str(tmp_path / "missing.tif"), out], "does not exist"),
        "not a raster": ([str(tmp_path / "text.tif"), out], "not a raster"),
        "corrupt": ([str(tmp_path / "truncated.tif"), out], "truncated or corrupt"),
        "no crs": ([str(plain), out], "no CRS"),
        "one band": ([str(grey), out], "colour"),
        "bands out of range": ([str(scene), out, "--bands", "1,2,9"], "out of range"),
        "bands malformed": ([str(scene), out, "--bands", "red"], "--bands"),
        "empty aoi": ([str(scene), out, "--aoi", "POLYGON EMPTY"], "AOI is empty"),
        "aoi outside": ([str(scene), out, "--aoi", far], "AOI"),
        "folder missing": ([str(scene), str(tmp_path / "no" / "o.tif")], "does not exist"),
        "output is input": ([str(scene), str(scene), "--overwrite"], "is the input"),
        "exists": ([str(scene), str(existing)], "exists; pass --overwrite"),
    }


def _visible_lines(text: str) -> list[str]:
    """Lines as a terminal shows them: a carriage return rewrites its line (progress bars)."""
    shown = (line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n"))
    return [line for line in shown if line]


def test_bad_inputs_are_one_line_errors_with_exit_code_2(run, scene, tmp_path):
    before = {p.name for p in tmp_path.iterdir()}
    for name, (args, message) in _bad_cases(tmp_path, scene).items():
        before |= {p.name for p in tmp_path.iterdir()}
        result = run(*args)
        assert result.exit_code == 2, (name, result.output)
        lines = _visible_lines(result.stderr)  # a progress bar that started is erased
        assert len(lines) == 1 and lines[0].startswith("Error: "), (name, result.stderr)
        assert message in lines[0], (name, lines[0])
        assert "Traceback" not in result.output
        assert not (tmp_path / "out.tif").exists(), name
        assert {p.name for p in tmp_path.iterdir()} <= before, name  # no temp files left


def test_ungeoreferenced_allowed(run, tmp_path):
    plain = write_geotiff(tmp_path / "plain.tif", noise_rgb(20, 20), crs=None)
    result = run(plain, tmp_path / "o.tif", "--allow-ungeoreferenced", "--quiet")
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "o.tif") as o:
        assert o.crs is None and o.count == 3


def test_refuses_to_overwrite(run, scene, tmp_path):
    out = tmp_path / "o.tif"
    out.write_bytes(b"keep me")
    result = run(scene, out)
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert out.read_bytes() == b"keep me"
    assert run(scene, out, "--overwrite", "--quiet").exit_code == 0
    with rasterio.open(out) as o:
        assert np.count_nonzero(o.read(4)) > 0


def test_read_only_folder(run, scene, tmp_path, monkeypatch):
    from geomap_gan import files

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.os, "open", refuse)  # CI runs as root, which may write anywhere
    result = run(scene, tmp_path / "o.tif")
    assert result.exit_code == 2 and "cannot write" in result.stderr
    assert not (tmp_path / "o.tif").exists()


def test_help_lists_the_options():
    result = CliRunner().invoke(cli, ["render", "--help"])
    assert result.exit_code == 0
    for option in ("--model", "--overlap", "--batch-size", "--device", "--bands", "--scale",
                   "--gsd", "--output-res", "--aoi", "--format", "--co", "--overwrite",
                   "--allow-ungeoreferenced", "--quiet"):  # fmt: skip
        assert option in result.output


def _events(stdout: str) -> list[dict]:
    """Every stdout line must be one JSON event (a wrapper parses nothing else)."""
    return [json.loads(line) for line in stdout.splitlines()]


def test_progress_json_streams_progress_log_and_result(run, scene, tmp_path):
    out = tmp_path / "map.tif"
    result = run(scene, out, "--progress", "json")
    assert result.exit_code == 0, result.output
    events = _events(result.stdout)
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert "log" in kinds  # the engine's INFO lines, which the plain CLI shows only with -v
    progress = [(e["done"], e["total"]) for e in events if e["event"] == "progress"]
    total = progress[-1][1]
    assert total > 1 and progress[-1] == (total, total)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert events[-1]["path"] == str(out) and events[-1]["width"] == 90
    assert out.is_file()


def test_progress_json_error_is_the_last_event_with_the_cli_message(run, scene, tmp_path):
    out = tmp_path / "map.tif"
    result = run(scene, out, "--progress", "json", "--bands", "1,2,9")
    assert result.exit_code == 2
    events = _events(result.stdout)
    assert events[-1]["event"] == "error"
    assert f"Error: {events[-1]['message']}" in result.stderr
    assert "\n" not in events[-1]["message"] and "9" in events[-1]["message"]
    assert not out.exists()
