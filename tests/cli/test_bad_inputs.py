"""Hostile and careless inputs through the CLI: exit code 2, one line on stderr, no traceback,
no partial or hidden file left, and every file the user had byte-identical afterwards."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from geotiffs import noise_rgb, write_geotiff

from geomap_gan import files
from geomap_gan.cli import cli
from geomap_gan.errors import OutputExistsError
from geomap_gan.model.modelfile import CARD_KEY, FORMAT


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (hidden ones too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def refused(args: list[str], message: str, folder: Path) -> None:
    """Run the CLI; it must fail with one ``Error:`` line naming ``message`` and leave
    ``folder`` exactly as it was."""
    before = snapshot(folder)
    result = CliRunner().invoke(cli, [str(a) for a in args])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, (args, result.output)
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert "Traceback" not in result.output
    assert snapshot(folder) == before, args


@pytest.fixture
def scene(tmp_path) -> Path:
    return write_geotiff(tmp_path / "scene.tif", noise_rgb(40, 50))


def small_dataset(root: Path, n: int = 3) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        for i in range(n):
            pair = np.random.default_rng(i).integers(0, 256, (32, 64, 3), dtype=np.uint8)
            Image.fromarray(pair).save(root / split / f"{i + 1}.jpg")
    return root


def test_evaluate_grid_never_replaces_a_file(tmp_path, tiny_model_file):  # item 1
    data = small_dataset(tmp_path / "maps")
    refused(["evaluate", data, "--model", tiny_model_file, "--grid", data / "val" / "1.jpg",
             "--overwrite"], "is the input", tmp_path)  # fmt: skip
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"an earlier grid")
    refused(["evaluate", data, "--model", tiny_model_file, "--grid", grid], "--overwrite", tmp_path)


def test_train_never_replaces_an_earlier_run(tmp_path):  # item 2
    data = small_dataset(tmp_path / "maps")
    out = tmp_path / "run"
    out.mkdir()
    for name in ("model.safetensors", "log.csv"):
        (out / name).write_bytes(b"an earlier run's " + name.encode())
        refused(["train", data, "--out", out, "--ngf", "4", "--num-downs", "5", "--crop-size", "32",
                 "--load-size", "32", "--max-steps", "1"], name, tmp_path)  # fmt: skip
        (out / name).unlink()
    regular = tmp_path / "a_file"
    regular.write_bytes(b"not a folder")
    refused(["train", data, "--out", regular, "--ngf", "4"], "is a file", tmp_path)  # item 16


def test_an_image_over_the_decompression_bomb_limit_is_skipped_or_refused(tmp_path, monkeypatch):
    """Item 16: Pillow refuses images over twice MAX_IMAGE_PIXELS with an error that is not an
    OSError; train skips such an image like an unreadable one, or refuses it with --strict."""
    from PIL import Image

    from geomap_gan.training.data import load_split

    data = small_dataset(tmp_path / "maps")
    big = np.random.default_rng(9).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    Image.fromarray(big).save(data / "train" / "9.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 64x128 is over twice that; 32x64 not
    pairs, report = load_split(data, "train", 32)
    assert len(pairs) == 3 and report.skipped == (str(data / "train" / "9.jpg"),)
    refused(["train", data, "--out", tmp_path / "run", "--strict", "--num-downs", "5",
             "--crop-size", "32", "--load-size", "32"], "decompression-bomb limit", tmp_path)  # fmt: skip


def test_render_never_writes_over_a_vrt_source_or_a_sidecar(tmp_path, scene, tiny_model_file):
    import rasterio.shutil

    vrt = tmp_path / "scene.vrt"
    rasterio.shutil.copy(scene, vrt, driver="VRT")
    model = ["--model", tiny_model_file, "--overlap", "8"]
    refused(["render", vrt, scene, "--overwrite", *model], "is the input", tmp_path)  # item 3
    for sidecar in ("scene.tif.ovr", "scene.tif.aux.xml", "scene.tfw"):  # item 6
        refused(["render", scene, tmp_path / sidecar, "--overwrite", *model], "sidecar", tmp_path)


def test_a_file_that_appears_during_the_work_is_left_alone(tmp_path):  # item 5
    dst = tmp_path / "map.tif"
    with pytest.raises(OutputExistsError, match="appeared"), files.atomic_output(dst, False) as tmp:
        tmp.write_bytes(b"our map")
        dst.write_bytes(b"someone else's file")
    assert dst.read_bytes() == b"someone else's file"
    assert [p.name for p in tmp_path.iterdir()] == ["map.tif"]


def test_stale_temp_files_of_dead_runs_are_removed(tmp_path):  # item 24
    dst = tmp_path / "map.tif"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(dead.stdout)
    stale = files.temp_path(dst).with_name(
        files.temp_path(dst).name.replace(f"-{os.getpid()}-", f"-{pid}-")
    )
    stale.write_bytes(b"left by a SIGKILL")
    alive = files.temp_path(dst)  # this process: still running, kept
    alive.write_bytes(b"in progress")
    foreign = tmp_path / f".{dst.name}.not-ours.tmp"
    foreign.write_bytes(b"unknown writer, kept")
    assert files.remove_stale(dst) == 1
    assert not stale.exists() and alive.exists() and foreign.exists()


def _model_file(path: Path, card: dict, tensors: dict | None = None) -> Path:
    from safetensors.torch import save_file

    save_file(tensors or {"x": torch.zeros(1)}, str(path),
              metadata={"format": FORMAT, CARD_KEY: json.dumps(card)})  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("ngf", 2048, "ngf"), ("gsd", 0, "gsd"), ("gsd", "abc", "gsd"), ("gsd", float("nan"), "gsd"),
     ("tile_size", 100, "tile_size"), ("tile_size", 0, "tile_size"), ("ngf", "abc", "ngf"),
     ("num_downs", -3, "num_downs"), ("receptive_field", 7, "receptive field")],
)  # fmt: skip
def test_model_cards_are_validated_before_anything_is_built(tmp_path, scene, field, value,
                                                            message):  # fmt: skip  # items 7, 14
    card = {"name": "bad", "ngf": 8, "num_downs": 5, "tile_size": 32, "gsd": 2.0, field: value}
    bad = _model_file(tmp_path / "bad.safetensors", card)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused(["render", scene, tmp_path / "o.tif", "--model", bad], message, tmp_path)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kb < 1024**2  # under 1 GB more at peak: nothing of ngf=2048's 17 GB was built


def test_a_refused_pickle_never_suggests_an_unsafe_reload(tmp_path, scene):  # item 9
    class Trap:
        def __reduce__(self):
            return (print, ("this ran",))

    trap = tmp_path / "trap.pt"
    torch.save({"G": Trap()}, trap)
    result = CliRunner().invoke(cli, ["render", str(scene), str(tmp_path / "o.tif"), "--model",
                                      str(trap)])  # fmt: skip
    assert result.exit_code == 2 and "safe load refuses" in result.stderr
    assert "weights_only" not in result.output and "this ran" not in result.output


def test_numbers_out_of_range_are_refused(tmp_path, scene, tiny_model_file):  # items 15, 17
    refused(["render", scene, tmp_path / "o.tif", "--model", tiny_model_file, "--overlap", "8",
             "--threads", "100000"], "--threads", tmp_path)  # fmt: skip
    data = small_dataset(tmp_path / "maps")
    refused(["evaluate", data, "--model", tiny_model_file, "--batch-size", "0"], "--batch-size",
            tmp_path)  # fmt: skip
    refused(["evaluate", data, "--model", tiny_model_file, "--limit", "-1"], "--limit", tmp_path)


def test_sigterm_is_handled_like_ctrl_c(tmp_path, tiny_model_file):  # item 23
    big = write_geotiff(tmp_path / "big.tif", noise_rgb(1500, 1500))
    before = snapshot(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "geomap_gan", "render", str(big), str(tmp_path / "map.tif"),
         "--model", str(tiny_model_file), "--overlap", "8", "--quiet", "--no-compile"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".map.tif.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".map.tif.*.tmp")), "the render never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Terminated" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_more_bad_numbers_and_types(tmp_path, scene, tiny_model_file):  # items 19, 21, 22
    model = ["--model", tiny_model_file]
    for gsd in ("inf", "nan", "1e6", "0"):
        refused(["render", scene, tmp_path / "o.tif", *model, "--overlap", "8", "--gsd", gsd],
                "--gsd", tmp_path)  # fmt: skip
    refused(["render", scene, tmp_path / "o.tif", *model, "--overlap", "30"], "--overlap",
            tmp_path)  # fmt: skip
    complex_scene = tmp_path / "sar.tif"
    data = (noise_rgb(20, 20).astype(np.float32) * (1 + 1j)).astype(np.complex64)
    write_geotiff(complex_scene, data)
    refused(["render", complex_scene, tmp_path / "o.tif", *model, "--overlap", "8"], "complex",
            tmp_path)  # fmt: skip


def test_local_engineering_crs_and_gdal_virtual_paths_render(tmp_path, tiny_model_file):
    """Items 12 and 13: a LOCAL_CS in metres renders; /vsizip//abs/... keeps its double slash."""
    import zipfile

    from affine import Affine
    from rasterio.crs import CRS

    wkt = 'LOCAL_CS["Engineering",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
    local = write_geotiff(tmp_path / "local.tif", noise_rgb(40, 40), crs=CRS.from_wkt(wkt),
                          transform=Affine(2.0, 0, 0, 0, -2.0, 0))  # fmt: skip
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as z:
        z.write(local, "a.tif")
    for i, src in enumerate([str(local), f"/vsizip/{tmp_path / 'x.zip'}/a.tif"]):
        out = tmp_path / f"map{i}.tif"
        result = CliRunner().invoke(cli, ["render", src, str(out), "--model", str(tiny_model_file),
                                          "--overlap", "8", "-q"])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert out.is_file()


def test_dataset_paths_say_what_to_give(tmp_path, tiny_model_file):  # item 26
    data = small_dataset(tmp_path / "maps")
    file_arg = data / "train" / "1.jpg"
    refused(["train", file_arg, "--out", tmp_path / "run"], "is a file", tmp_path)
    result = CliRunner().invoke(cli, ["evaluate", str(data / "val"), "--model",
                                      str(tiny_model_file), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 3  # the pairs of the folder it was given


def test_a_scheduler_that_is_not_an_address_is_one_line(tmp_path, scene, tiny_model_file):  # 18
    refused(["render", scene, tmp_path / "o.tif", "--model", tiny_model_file, "--overlap", "8",
             "--scheduler", "not a url"], "not a Dask scheduler address", tmp_path)  # fmt: skip


@pytest.mark.parametrize(
    ("driver", "co", "message"),
    [
        ("GTiff", "COMPRESS=BOGUS", "'BOGUS' is an unexpected value for COMPRESS"),
        ("GTiff", "BOGUSNAME=1", "does not support creation option BOGUSNAME"),
        ("GTiff", "PREDICTOR=abc", "--co PREDICTOR=abc: PREDICTOR=abc is not supported"),
        ("GTiff", "ZLEVEL=abc", "ZLEVEL must be a whole number from 1 to 12"),
        ("COG", "COMPRESS=NOPE", "'NOPE' is an unexpected value for COMPRESS"),
        ("COG", "BLOCKSIZE=abc", "BLOCKSIZE must be a whole number from 128"),  # GDAL aborts
    ],
)
def test_creation_options_gdal_would_ignore_are_refused(  # item 20
    tmp_path, scene, tiny_model_file, driver, co, message
):
    refused(["render", scene, tmp_path / "map.tif", "--model", tiny_model_file, "--format", driver,
             "--co", co], message, tmp_path)  # fmt: skip


def test_valid_creation_options_still_apply(tmp_path, scene, tiny_model_file):  # item 20
    import rasterio

    out = tmp_path / "map.tif"
    result = CliRunner().invoke(cli, ["render", str(scene), str(out), "--model",
                                      str(tiny_model_file), "--overlap", "8", "--co",
                                      "COMPRESS=ZSTD"])  # fmt: skip
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds:
        assert ds.compression.name == "zstd"


def test_output_must_be_named_as_a_geotiff(tmp_path, scene, tiny_model_file):  # item 26
    refused(["render", scene, tmp_path / "map.png", "--model", tiny_model_file, "--overlap", "8"],
            "map.png must end in .tif or .tiff", tmp_path)  # fmt: skip


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_a_scene_without_valid_pixels_is_one_error_whatever_its_type(  # item 26
    tmp_path, tiny_model_file, dtype
):
    if dtype == "uint8":
        src = write_geotiff(tmp_path / "s.tif", np.zeros((3, 40, 50), np.uint8), nodata=0)
    else:
        src = write_geotiff(tmp_path / "s.tif", np.full((3, 40, 50), np.nan, np.float32))
    refused(["render", src, tmp_path / "map.tif", "--model", tiny_model_file, "--overlap", "8"],
            "has no valid pixels (all nodata); nothing to render", tmp_path)  # fmt: skip


def test_a_self_intersecting_aoi_is_repaired_and_said(tmp_path, scene, tiny_model_file, caplog):
    """item 26: a bow-tie polygon renders its valid shape, with one warning naming the fault."""
    import logging

    from geomap_gan.model.modelfile import load_model
    from geomap_gan.rendering.engine import RenderOptions, render

    x0, y0 = 500_000.0, 5_000_000.0  # the scene's top-left corner (geotiffs.ORIGIN), 2 m pixels
    bowtie = (f"POLYGON(({x0} {y0}, {x0 + 60} {y0 - 60}, {x0 + 60} {y0}, {x0} {y0 - 60}, "
              f"{x0} {y0}))")  # fmt: skip
    options = RenderOptions(overlap=8, aoi=bowtie, aoi_crs="EPSG:32631")
    with caplog.at_level(logging.WARNING, logger="geomap_gan"):
        render(scene, tmp_path / "map.tif", load_model(tiny_model_file), options)
    said = [r.message for r in caplog.records if "not a valid polygon" in r.message]
    assert len(said) == 1 and "Self-intersection" in said[0]
    assert (tmp_path / "map.tif").is_file()


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a real full disk (ENOSPC from the kernel), mounted for the test (root)."""
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        from conftest import unavailable

        unavailable(f"cannot mount a small tmpfs ({mounted.stderr.strip()})",
                    "CI runs as root and must test a real full disk")  # fmt: skip
    yield mnt
    subprocess.run(["umount", "--lazy", str(mnt)], check=True)


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, small_disk, tiny_model_file):
    """Item 11 on a real full disk: render and train stop with one line, exit 2, no traceback,
    no partial or hidden file, and the file that was already there is untouched."""
    (small_disk / "kept.txt").write_bytes(b"the user's own file")
    big = write_geotiff(tmp_path / "big.tif", noise_rgb(600, 600))  # 1.4 MB of RGBA map
    refused(["render", big, small_disk / "map.tif", "--model", tiny_model_file, "--overlap", "8",
             "--co", "COMPRESS=NONE", "--quiet"], "the disk is full", small_disk)  # fmt: skip
    data = small_dataset(tmp_path / "maps")
    refused(["-q", "train", data, "--out", small_disk / "run", "--ngf", "16", "--ndf", "16",
             "--num-downs", "5", "--crop-size", "32", "--load-size", "32", "--max-steps", "1", "--val-every", "0"],
            "the disk is full", small_disk)  # fmt: skip
