"""Probe, inputs: every file a command reads is a regular file (links followed) or a GDAL virtual
path (/vsi..., a URL); a FIFO, a device or a socket is refused at once, never read (a FIFO
blocks forever). The cases of issue 39 and others of the same promise.

Each test has a timeout: a regression blocks on the FIFO instead of failing.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from geotiffs import noise_rgb, write_geotiff
from probe_util import TRAIN_TINY, refused, small_dataset

pytestmark = pytest.mark.timeout(120)

DEAD = ["--scheduler", "tcp://127.0.0.1:9"]


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_geotiff(tmp_path / "scene.tif", noise_rgb(40, 50))


@pytest.fixture
def model(tiny_model_file: Path) -> list[object]:
    return ["--model", tiny_model_file, "--overlap", "8", "--device", "cpu"]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo.tif"
    os.mkfifo(path)
    return path


@pytest.fixture
def sock(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "sock.tif"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    yield path
    s.close()


# ---- rasters --------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["fifo", "link-to-fifo", "socket", "/dev/zero", "/dev/null"])
def test_render_refuses_what_is_not_a_regular_file(tmp_path, fifo, sock, model, which):
    """Issue 39: a FIFO as input blocked forever."""
    link = tmp_path / "link.tif"
    link.symlink_to(fifo)
    src = {"fifo": fifo, "link-to-fifo": link, "socket": sock}.get(which, Path(which))
    kind = {"socket": "socket", "/dev/zero": "device", "/dev/null": "device"}.get(which, "FIFO")
    refused(["render", src, tmp_path / "map.tif", *model], f"is a {kind}, not a regular file",
            tmp_path)  # fmt: skip


def test_render_strips_and_render_many_refuse_a_fifo(tmp_path, fifo, model):
    refused(["render", fifo, tmp_path / "map.tif", "--strips", "2", *model, *DEAD], "FIFO",
            tmp_path)  # fmt: skip
    (tmp_path / "out").mkdir()
    refused(["render-many", fifo, "--out-dir", tmp_path / "out", *model, *DEAD], "FIFO", tmp_path)


def test_a_fifo_in_an_input_folder_is_not_read(tmp_path, model):
    (tmp_path / "in").mkdir()
    os.mkfifo(tmp_path / "in" / "scene.tif")
    (tmp_path / "out").mkdir()
    refused(["render-many", tmp_path / "in", "--out-dir", tmp_path / "out", *model, *DEAD],
            "no input scenes", tmp_path)  # fmt: skip


def test_a_vrt_whose_source_is_a_fifo_is_not_read_for_the_output_check(tmp_path, scene, model):
    """The output check opens an input's VRT sources to list their files: never a FIFO."""
    import rasterio.shutil

    inner = tmp_path / "inner.vrt"
    rasterio.shutil.copy(scene, inner, driver="VRT")
    os.mkfifo(tmp_path / "pipe.vrt")
    outer = tmp_path / "outer.vrt"
    outer.write_text(inner.read_text().replace(">scene.tif<", ">pipe.vrt<"))
    from geomap_gan import files

    assert files.gdal_files(outer)[0] == str(outer)  # returns; GDAL may not list pipe.vrt


# ---- models, AOIs, manifests, datasets -------------------------------------------------------
def test_a_fifo_as_model_is_refused(tmp_path, scene, fifo):
    refused(["render", scene, tmp_path / "map.tif", "--model", fifo], "not a regular file",
            tmp_path)  # fmt: skip
    refused(["info", fifo], "not a regular file", tmp_path)


def test_a_fifo_as_aoi_is_not_read(tmp_path, scene, model, fifo):
    refused(["render", scene, tmp_path / "map.tif", "--aoi", fifo, *model], "--aoi", tmp_path)


def test_a_fifo_as_manifest_is_refused(tmp_path, fifo):
    refused(["download", "maps", tmp_path / "maps", "--manifest", fifo, "--url",
             "http://127.0.0.1:9/m.tar.gz"], "FIFO", tmp_path)  # fmt: skip


def test_a_fifo_in_a_dataset_is_refused(tmp_path, tiny_model_file):
    data = small_dataset(tmp_path / "maps")
    os.mkfifo(data / "val" / "9.jpg")
    refused(["evaluate", data, "--model", tiny_model_file], "not a regular file", tmp_path)
    os.mkfifo(data / "train" / "9.jpg")
    refused(["train", data, "--out", tmp_path / "run", *TRAIN_TINY], "not a regular file",
            tmp_path)  # fmt: skip


# ---- what is fine -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("/vsimem/geomap-gan-probe/missing.tif", "is not a raster GDAL can read"),
        ("missing.tif", "does not exist"),
        (".", "is a folder"),
    ],
)
def test_virtual_missing_and_folder_inputs_are_one_line(tmp_path, model, src, message):
    path = src if src.startswith("/vsi") else tmp_path / src
    refused(["render", path, tmp_path / "map.tif", *model], message, tmp_path)


def test_a_link_to_a_regular_file_is_a_regular_input(tmp_path, scene, model):
    from probe_util import run

    (tmp_path / "link.tif").symlink_to(scene)
    result = run(["render", tmp_path / "link.tif", tmp_path / "map.tif", *model, "-q"])
    assert result.exit_code == 0, result.output


def test_check_input_accepts_virtual_paths_without_touching_them():
    from geomap_gan import files

    for path in ("/vsicurl/https://example.invalid/a.tif", "https://example.invalid/a.tif",
                 "/vsizip//nowhere/a.zip/a.tif", "s3://bucket/a.tif"):  # fmt: skip
        assert files.check_input(path) == path


def test_a_val_dir_that_cannot_be_read_is_refused_not_skipped(tmp_path):
    """Issue 39: `train --val-dir nope` trained without validation and exited 0 (a warning
    that -q hid)."""
    data = small_dataset(tmp_path / "maps")
    refused(["-q", "train", data, "--out", tmp_path / "run", "--val-dir", tmp_path / "nope",
             *TRAIN_TINY], "--val-dir", tmp_path)  # fmt: skip
    (tmp_path / "empty" / "val").mkdir(parents=True)
    refused(["train", data, "--out", tmp_path / "run", "--val-dir", tmp_path / "empty",
             *TRAIN_TINY], "--val-dir", tmp_path)  # fmt: skip
