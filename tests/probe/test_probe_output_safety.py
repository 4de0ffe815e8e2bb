"""Probe, output safety: no command or option writes over an input or a file GDAL reads for one,
writes bytes of another format under a suffix, replaces a file without --overwrite, or deletes
what the run did not create. The cases of issue 39 and others of the same promise.

Scale-out refusals come before any cluster is started (the scheduler address is a dead port),
so these run in a second or two each.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from geotiffs import noise_rgb, write_geotiff
from probe_util import TRAIN_TINY, refused, run, small_dataset, snapshot

from geomap_gan import files, formats
from geomap_gan.errors import OutputError, OutputExistsError

DEAD = ["--scheduler", "tcp://127.0.0.1:9"]  # never reached: the checks come first


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_geotiff(tmp_path / "scene.tif", noise_rgb(40, 50))


@pytest.fixture
def model(tiny_model_file: Path) -> list[object]:
    return ["--model", tiny_model_file, "--overlap", "8", "--device", "cpu"]


def vrt_over(src: Path, vrt: Path) -> Path:
    rasterio.shutil.copy(src, vrt, driver="VRT")
    return vrt


# ---- render --strips: the same checks as plain render, and its strips folder -----------------
def test_strips_overwrite_never_removes_a_folder_the_tool_did_not_make(tmp_path, scene, model):
    """Issue 39: `render IN map.vrt --strips N --overwrite` deleted map_strips/, input and all."""
    folder = tmp_path / "map_strips"
    folder.mkdir()
    inside = write_geotiff(folder / "scene.tif", noise_rgb(40, 50))
    refused(["render", inside, tmp_path / "map.vrt", "--strips", "2", "--overwrite", *model,
             *DEAD], "lies inside", tmp_path)  # fmt: skip
    refused(["render", scene, tmp_path / "map.vrt", "--strips", "2", "--overwrite", *model,
             *DEAD], "was not made by geomap-gan", tmp_path)  # fmt: skip
    (folder / files.MARKER).write_text("{}")  # the tool's own folder: still only with --overwrite
    refused(["render", scene, tmp_path / "map.vrt", "--strips", "2", *model, *DEAD],
            "pass --overwrite", tmp_path)  # fmt: skip


@pytest.mark.parametrize(
    ("out", "extra", "message"),
    [
        ("scene.tif", ["--overwrite"], "is the input"),  # the VRT's source
        ("scene.tif.ovr", ["--overwrite"], "sidecar"),
        ("scene.tif.aux.xml", ["--overwrite"], "sidecar"),
        ("map.png", [], "must end in .tif or .tiff"),
        ("map.jpg", ["--format", "COG"], "must end in .tif or .tiff"),
        ("map.vrt.tif.png", [], "must end in"),
        ("missing/map.tif", [], "does not exist"),
        ("taken.tif", [], "pass --overwrite"),
        ("map.tif", ["--co", "BLOCKXSIZE=65536"], "BLOCKXSIZE must be a whole number"),
    ],
)
def test_strips_make_the_checks_of_plain_render(tmp_path, scene, model, out, extra, message):
    """Issue 39: --strips skipped them (a VRT's source overwritten, TIFF bytes in map.png)."""
    vrt = vrt_over(scene, tmp_path / "scene.vrt")
    (tmp_path / "taken.tif").write_bytes(b"the user's file")
    refused(["render", vrt, tmp_path / out, "--strips", "2", *extra, *model, *DEAD], message,
            tmp_path)  # fmt: skip


def test_strips_refuse_an_output_that_is_the_source_of_a_vrt_of_a_vrt(tmp_path, scene, model):
    inner = vrt_over(scene, tmp_path / "inner.vrt")
    outer = tmp_path / "outer.vrt"  # reads inner.vrt, which reads scene.tif
    outer.write_text(inner.read_text().replace(">scene.tif<", ">inner.vrt<"))
    with rasterio.open(outer) as ds:
        assert [Path(f).name for f in ds.files] == ["outer.vrt", "inner.vrt"]  # GDAL: one level
    for out in (scene, inner):
        refused(["render", outer, out, "--strips", "2", "--overwrite", *model, *DEAD],
                "is the input", tmp_path)  # fmt: skip


# ---- render-many -----------------------------------------------------------------------------
def test_render_many_never_replaces_the_source_of_an_input_vrt(tmp_path, model):
    """Issue 39: `render-many --overwrite` replaced a file an input VRT reads."""
    out = tmp_path / "out"
    out.mkdir()
    source = write_geotiff(out / "a.tif", noise_rgb(40, 50))
    (tmp_path / "in").mkdir()
    vrt = vrt_over(source, tmp_path / "in" / "a.vrt")  # its output would be out/a.tif
    refused(["render-many", vrt, "--out-dir", out, "--overwrite", *model, *DEAD],
            "is the input", tmp_path)  # fmt: skip
    other = write_geotiff(tmp_path / "in" / "b.tif", noise_rgb(40, 50))
    vrt_b = vrt_over(out / "a.tif", tmp_path / "in" / "c.vrt")  # output c.tif, reads out/a.tif
    refused(["render-many", other, vrt_b, tmp_path / "in" / "a.vrt", "--out-dir", out,
             "--overwrite", *model, *DEAD], "is the input", tmp_path)  # fmt: skip


def test_render_many_never_replaces_a_mosaic_it_did_not_write(tmp_path, scene, model):
    """Issue 39: an existing OUT_DIR/mosaic.vrt was replaced without --overwrite."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "mosaic.vrt").write_text("<VRTDataset>the user's own mosaic</VRTDataset>")
    refused(["render-many", scene, "--out-dir", out, *model, *DEAD], "mosaic.vrt exists",
            tmp_path)  # fmt: skip
    (out / "mosaic.vrt").unlink()
    (out / "mosaic.vrt").symlink_to(scene)  # a link to an input: never, --overwrite or not
    refused(["render-many", scene, "--out-dir", out, "--overwrite", *model, *DEAD],
            "is the input", tmp_path)  # fmt: skip


def test_a_mosaic_the_tool_wrote_is_brought_up_to_date(tmp_path, scene):
    from geomap_gan.mosaic import check_mosaic, is_own_mosaic, write_vrt

    vrt = write_vrt([scene], tmp_path / "mosaic.vrt")
    assert is_own_mosaic(vrt) and check_mosaic(vrt, False, [scene]) == vrt
    with rasterio.open(vrt) as ds:  # GDAL reads the marker as plain metadata
        assert ds.tags()["GEOMAP_GAN_MOSAIC"] == "1" and ds.count == 4
    with pytest.raises(OutputExistsError):
        write_vrt([scene], vrt, overwrite=False)


def test_render_many_input_that_is_in_the_out_dir_is_refused(tmp_path, model):
    out = tmp_path / "out"
    out.mkdir()
    src = write_geotiff(out / "scene.tif", noise_rgb(40, 50))
    refused(["render-many", src, "--out-dir", out, "--overwrite", *model, *DEAD], "is the input",
            tmp_path)  # fmt: skip


# ---- evaluate, train, plain render -----------------------------------------------------------
@pytest.mark.parametrize("name", ["g.jpg", "g.tif", "g", "g.PNG.txt"])
def test_evaluate_grid_must_be_named_png(tmp_path, tiny_model_file, name):
    """Issue 39: `evaluate --grid g.jpg` wrote PNG bytes."""
    data = small_dataset(tmp_path / "maps")
    refused(["evaluate", data, "--model", tiny_model_file, "--grid", tmp_path / name],
            "must end in .png", tmp_path)  # fmt: skip


def test_evaluate_grid_through_a_link_to_a_val_image_is_refused(tmp_path, tiny_model_file):
    data = small_dataset(tmp_path / "maps")
    (tmp_path / "g.png").symlink_to(data / "val" / "1.jpg")
    refused(["evaluate", data, "--model", tiny_model_file, "--grid", tmp_path / "g.png",
             "--overwrite"], "is the input", tmp_path)  # fmt: skip


def test_train_never_replaces_the_users_sample_grids(tmp_path):
    """Issue 39: `train --out RUN` replaced RUN/samples/epoch_NNN.png without --overwrite."""
    data = small_dataset(tmp_path / "maps")
    samples = tmp_path / "run" / "samples"
    samples.mkdir(parents=True)
    (samples / "epoch_001.png").write_bytes(b"the user's sample grid")
    refused(["train", data, "--out", tmp_path / "run", *TRAIN_TINY], "--overwrite", tmp_path)


def test_train_refuses_samples_that_is_a_file_before_training(tmp_path):
    """Issue 39: RUN/samples being a file raised a traceback after an epoch of training."""
    data = small_dataset(tmp_path / "maps")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "samples").write_bytes(b"a file")
    refused(["train", data, "--out", tmp_path / "run", *TRAIN_TINY], "is not a folder", tmp_path)


def test_train_writes_its_samples_atomically_and_replaces_them_only_when_asked(tmp_path):
    data = small_dataset(tmp_path / "maps")
    out = tmp_path / "run"
    result = run(["train", data, "--out", out, *TRAIN_TINY, "--epochs", "1", "--epochs-decay",
                  "0", "--samples", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    grid = out / "samples" / "epoch_001.png"
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (out / "samples").iterdir()] == ["epoch_001.png"]  # no temp file


def test_plain_render_refuses_a_hard_link_or_symlink_to_its_input(tmp_path, scene, model):
    os.link(scene, tmp_path / "hard.tif")
    (tmp_path / "soft.tif").symlink_to(scene)
    for out in ("hard.tif", "soft.tif"):
        refused(["render", scene, tmp_path / out, "--overwrite", *model], "is the input", tmp_path)


def test_an_output_that_is_a_fifo_is_refused_even_with_overwrite(tmp_path, scene, model):
    os.mkfifo(tmp_path / "out.tif")
    refused(["render", scene, tmp_path / "out.tif", "--overwrite", *model],
            "not a regular file", tmp_path)  # fmt: skip


@pytest.mark.parametrize("length", [200, 240, 251])
def test_a_long_output_name_works_and_leaves_nothing(tmp_path, scene, model, length):
    """Issue 39: a valid 240-character name was refused (its hidden temp name was too long)."""
    name = "m" * (length - 4) + ".tif"
    result = run(["render", scene, tmp_path / name, "--format", "COG", *model, "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["scene.tif", name, "tiny.safetensors"]
    )


def test_temp_and_scratch_names_stay_under_the_name_limit(tmp_path):
    dst = tmp_path / ("x" * 250 + ".tif")
    for tag in ("", "model", "strips", "old", "extracting"):
        assert len(files.temp_path(dst, tag).name.encode()) < 160
    folder = files.scratch_dir(dst, "strips")
    assert (folder / files.MARKER).is_file() and files.remove_stale(dst) == 0  # ours: alive
    files.remove_made_dir(folder)
    with pytest.raises(OutputError, match="over 255 bytes"):
        files.check_output(tmp_path / ("y" * 256 + ".tif"), False)


def test_every_output_format_has_a_suffix_rule():
    for fmt in formats.FORMATS.values():
        assert fmt.suffixes and all(s.startswith(".") and s == s.lower() for s in fmt.suffixes)
        formats.check_suffix(Path("a" + fmt.suffixes[0].upper()), fmt)  # case-insensitive
        with pytest.raises(OutputError, match=f"for example a{fmt.suffixes[0]}"):
            formats.check_suffix(Path("a.nope"), fmt)


# ---- download -------------------------------------------------------------------------------
def _fake_fetch(payload: bytes):
    def fetch(url, part, opts, progress=None):  # type: ignore[no-untyped-def]
        part.write_bytes(payload)
        return len(payload)

    return fetch


def _archive(tmp_path: Path) -> tuple[bytes, dict[str, str]]:
    import hashlib
    import io

    members = {"train/1.jpg": b"a" * 100, "val/1.jpg": b"b" * 100}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(f"maps/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue(), {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}


def test_download_never_deletes_scratch_like_names_it_did_not_create(tmp_path, monkeypatch):
    """Issue 39: download deleted a folder named .DIR.old (and its other scratch names)."""
    from geomap_gan import download

    payload, manifest = _archive(tmp_path)
    monkeypatch.setattr(download, "fetch", _fake_fetch(payload))
    (tmp_path / ".maps.old").mkdir()
    (tmp_path / ".maps.old" / "mine.txt").write_text("the user's")
    (tmp_path / ".maps.extracting").write_text("a file with a scratch name")  # issue 39
    (tmp_path / ".maps.old.tmp").mkdir()  # temp-like, but no marker and no writer
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "old.txt").write_text("replaced with --force")
    theirs = {k: v for k, v in snapshot(tmp_path).items() if k.startswith(".maps.")}
    options = download.DownloadOptions(url="http://example.invalid/maps.tar.gz", force=True)
    download.download_maps(tmp_path / "maps", options, None, manifest)
    assert {k: v for k, v in snapshot(tmp_path).items() if k.startswith(".maps.")} == theirs
    assert sorted(p.name for p in (tmp_path / "maps").rglob("*.jpg")) == ["1.jpg", "1.jpg"]


def test_download_leaves_a_partial_archive_it_did_not_write(tmp_path):
    from geomap_gan.download import DownloadOptions, download_maps
    from geomap_gan.errors import DownloadError

    part = tmp_path / ".maps.tar.gz.part"
    part.write_bytes(b"someone else's file")  # no sidecar: not the tool's
    with pytest.raises(DownloadError, match="was not written by geomap-gan"):
        download_maps(tmp_path / "maps", DownloadOptions(url="http://127.0.0.1:9/m.tar.gz",
                                                         retries=0), None, {"a": "0" * 64})  # fmt: skip
    assert part.read_bytes() == b"someone else's file"


def test_download_into_a_file_is_refused(tmp_path):
    from geomap_gan.download import DownloadOptions, download_maps
    from geomap_gan.errors import DownloadError

    (tmp_path / "maps").write_bytes(b"a file")
    before = snapshot(tmp_path)
    with pytest.raises(DownloadError, match="not a folder"):
        download_maps(tmp_path / "maps", DownloadOptions(url="http://127.0.0.1:9/m.tar.gz"))
    result = run(["download", "maps", tmp_path / "maps", "--url", "http://127.0.0.1:9/m"])
    assert result.exit_code == 2 and snapshot(tmp_path) == before  # click's usage error


def test_check_output_folder_rules(tmp_path):
    folder = tmp_path / "f"
    assert files.check_output_folder(folder, False) == folder  # absent: fine
    folder.mkdir()
    with pytest.raises(OutputError, match="not made by geomap-gan"):
        files.check_output_folder(folder, True)
    (folder / files.MARKER).write_text("{}")
    with pytest.raises(OutputExistsError):
        files.check_output_folder(folder, False)
    assert files.check_output_folder(folder, True) == folder
    (tmp_path / "link").symlink_to(folder)
    with pytest.raises(OutputError, match="not a folder"):
        files.check_output_folder(tmp_path / "link", True)
    assert not files.remove_made_dir(tmp_path / "link") and folder.is_dir()
    np.testing.assert_equal(files.remove_made_dir(folder), True)
