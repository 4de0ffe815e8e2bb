"""Probe, error boundary: GDAL, OS and decoding errors, from whichever layer, reach the user as
one ``Error: ...`` line with exit code 2 (never a traceback, never a warning first); a bug keeps
its traceback. The cases of issue 39 and others of the same promise."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import tarfile
import zlib
from pathlib import Path

import pytest
import torch
from geotiffs import noise_rgb, write_geotiff
from probe_util import TRAIN_TINY, one_line_error, refused, run, small_dataset

from geomap_gan.cli.app import user_error


def _raised(make) -> BaseException:  # type: ignore[no-untyped-def]
    try:
        make()
    except BaseException as exc:  # noqa: BLE001 (the point is to get whatever it raises)
        return exc
    raise AssertionError("did not raise")


def _tar_read_error() -> None:
    with tarfile.open(fileobj=io.BytesIO(b"<html>not a tar</html>" * 50), mode="r:*"):
        pass


def _gdal_error() -> None:
    import rasterio

    rasterio.open("/nonexistent/geomap-gan/probe.tif")


def _cple_error() -> None:
    from rasterio._err import CPLE_AppDefinedError

    raise CPLE_AppDefinedError(1, 1, "line one\nline two\nline three")


def _image_error() -> None:
    from PIL import Image

    Image.open(io.BytesIO(b"not an image"))


def _safetensors_error() -> None:
    from safetensors import safe_open

    path = Path("/tmp/geomap-gan-probe-not-safetensors.bin")
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with safe_open(str(path), framework="pt"):
        pass


@pytest.mark.parametrize(
    ("make", "prefix"),
    [
        (_gdal_error, "GDAL: "),
        (_cple_error, "GDAL: line one line two line three"),
        (lambda: Path("/nonexistent/geomap-gan/x").read_bytes(),
         "No such file or directory: /nonexistent"),
        (lambda: (_ for _ in ()).throw(PermissionError(13, "Permission denied", "/x")),
         "Permission denied: /x"),
        (_tar_read_error, "cannot decode the data: "),
        (lambda: gzip.decompress(b"not gzip"), "cannot decode the data: "),
        (lambda: zlib.decompress(b"not zlib"), "cannot decode the data: "),
        (lambda: b"\xff\xfe\xfa".decode("utf-8"), "cannot decode the data: "),
        (lambda: pickle.loads(b"not a pickle"), "cannot decode the data: "),
        (_image_error, "cannot read an image: "),
        (_safetensors_error, "cannot decode the data: "),
    ],
)  # fmt: skip
def test_environment_and_data_errors_are_one_line(make, prefix):
    message = user_error(_raised(make))
    assert message is not None and message.startswith(prefix), message
    assert "\n" not in message and len(message) <= 2000


@pytest.mark.parametrize(
    "make",
    [lambda: 1 / 0, lambda: [][1], lambda: {}["k"], lambda: None.x, lambda: int("x")],  # type: ignore[attr-defined]
)
def test_a_bug_is_not_dressed_up_as_a_user_error(make):
    assert user_error(_raised(make)) is None


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param("rasterio", id="RasterioIOError"),
        pytest.param("oserror", id="OSError-EIO"),
        pytest.param("tar", id="tarfile"),
        pytest.param("cple", id="CPLE"),
    ],
)
def test_errors_raised_deep_inside_a_render_are_one_line(tmp_path, monkeypatch, exc):
    """Whatever the engine's layers raise that is not a bug: one line, exit 2."""
    import errno

    import rasterio.errors
    from rasterio._err import CPLE_OpenFailedError

    import geomap_gan.rendering.engine as engine

    errors = {
        "rasterio": rasterio.errors.RasterioIOError("Read failed.\nSee previous exception."),
        "oserror": OSError(errno.EIO, "Input/output error", str(tmp_path / "s.tif")),
        "tar": tarfile.ReadError("file could not be opened successfully:\n- method gz: x"),
        "cple": CPLE_OpenFailedError(4, 4, "cannot open\nsecond line"),
    }

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise errors[exc]

    monkeypatch.setattr(engine, "render", broken)
    src = write_geotiff(tmp_path / "s.tif", noise_rgb(40, 50))
    line = refused(["render", src, tmp_path / "o.tif", "--device", "cpu"], "Error: ", tmp_path)
    assert "See previous" not in line or "Read failed. See previous exception." in line


def test_progress_json_reports_such_errors_as_an_error_event(tmp_path, monkeypatch):
    import geomap_gan.rendering.engine as engine

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied", str(tmp_path / "o.tif"))

    monkeypatch.setattr(engine, "render", broken)
    src = write_geotiff(tmp_path / "s.tif", noise_rgb(40, 50))
    result = run(["render", src, tmp_path / "o.tif", "--progress", "json", "--device", "cpu"])
    events = [json.loads(ln) for ln in result.stdout.splitlines() if ln.startswith("{")]
    assert result.exit_code == 2 and events[-1]["event"] == "error"
    assert events[-1]["message"].startswith("Permission denied: ")


def test_a_pickled_model_is_refused_without_torchs_warning_first(tmp_path):
    """Issue 39: torch's 'Detected pickle protocol 4' warning preceded the refusal."""
    import datetime

    (tmp_path / "m.pt").write_bytes(pickle.dumps({"model": datetime.date(2020, 1, 1)}, 4))
    (tmp_path / "n.pt").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    torch.save(torch.nn.Conv2d(3, 3, 1), tmp_path / "o.pt")
    for name in ("m.pt", "n.pt", "o.pt"):
        refused(["info", tmp_path / name], "Error: ", tmp_path)
    # pytest records warnings itself: only a process of its own shows what a user sees
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "geomap_gan", "info", str(tmp_path / "n.pt")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: ") and "Warning" not in done.stderr


@pytest.mark.parametrize(
    "content", [[1, 2, 3], "a string", {"G": [1]}, {"not": "a checkpoint"}, torch.zeros(3)]
)
def test_resume_from_a_checkpoint_that_is_not_one_is_one_line(tmp_path, content):
    """Issue 39: a checkpoint that holds a list raised a traceback."""
    data = small_dataset(tmp_path / "maps")
    (tmp_path / "run").mkdir()
    torch.save(content, tmp_path / "run" / "checkpoint.pt")
    refused(["train", data, "--out", tmp_path / "run", "--resume", *TRAIN_TINY],
            "checkpoint", tmp_path)  # fmt: skip


def test_resume_with_a_state_dict_mismatch_is_one_line(tmp_path):
    """Issue 39: a state-dict mismatch on --resume printed several lines."""
    data = small_dataset(tmp_path / "maps")
    out = tmp_path / "run"
    assert run(["train", data, "--out", out, *TRAIN_TINY]).exit_code == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["G"] = {k + ".renamed": v for k, v in state["G"].items()}  # same config, other keys
    torch.save(state, out / "checkpoint.pt")
    line = refused(["train", data, "--out", out, "--resume", *TRAIN_TINY, "--max-steps", "2"],
                   "does not fit this architecture", tmp_path)  # fmt: skip
    assert "more" in line and len(line) < 600
    state["G"] = {k.removesuffix(".renamed"): v[..., :1] if v.ndim == 4 else v
                  for k, v in state["G"].items()}  # fmt: skip  # right keys, wrong shapes
    torch.save(state, out / "checkpoint.pt")
    refused(["train", data, "--out", out, "--resume", *TRAIN_TINY, "--max-steps", "2"],
            "does not fit this architecture", tmp_path)  # fmt: skip
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["opt_G"] = {"state": {}, "param_groups": []}  # an optimiser of another net
    torch.save(state, out / "checkpoint.pt")
    refused(["train", data, "--out", out, "--resume", *TRAIN_TINY, "--max-steps", "2"],
            "checkpoint", tmp_path)  # fmt: skip


def test_a_non_gzip_download_is_one_line(tmp_path, monkeypatch):
    """Issue 39: tarfile's five-line message (one line per compression it tried)."""
    from geomap_gan import download

    def fetch(url, part, opts, progress=None):  # type: ignore[no-untyped-def]
        part.write_bytes(b"<html>503 Service Unavailable</html>\n" * 40)
        return part.stat().st_size

    monkeypatch.setattr(download, "fetch", fetch)
    refused(["download", "maps", tmp_path / "maps", "--url", "http://127.0.0.1:9/maps.tar.gz"],
            "is not a tar archive", tmp_path)  # fmt: skip


@pytest.mark.parametrize("kind", ["truncated-gzip", "bzip2-garbage", "empty"])
def test_other_damaged_downloads_are_one_line(tmp_path, monkeypatch, kind):
    from geomap_gan import download

    payloads = {
        "truncated-gzip": gzip.compress(b"x" * 100_000)[:200],
        "bzip2-garbage": b"BZh91AY&SY" + b"\x00" * 64,
        "empty": b"",
    }

    def fetch(url, part, opts, progress=None):  # type: ignore[no-untyped-def]
        part.write_bytes(payloads[kind])
        return len(payloads[kind])

    monkeypatch.setattr(download, "fetch", fetch)
    refused(["download", "maps", tmp_path / "maps", "--url", "http://127.0.0.1:9/maps.tar.gz"],
            "Error: ", tmp_path)  # fmt: skip


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="mounts a read-only tmpfs (root)")
def test_download_into_a_read_only_parent_is_one_line(tmp_path):
    """Issue 39: a traceback from the first write of the partial archive."""
    import subprocess

    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = run(["download", "maps", mnt / "maps", "--url", "http://127.0.0.1:9/m.tar.gz"])
        one_line_error(result, "cannot")
    finally:
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)


def test_a_truncated_image_in_the_dataset_is_one_line(tmp_path, tiny_model_file):
    data = small_dataset(tmp_path / "maps")
    jpg = data / "val" / "2.jpg"
    jpg.write_bytes(jpg.read_bytes()[:50])
    result = run(["evaluate", data, "--model", tiny_model_file, "--device", "cpu"])
    assert result.exit_code in (0, 2) and "Traceback" not in result.output
    if result.exit_code == 2:
        one_line_error(result, "Error: ")
