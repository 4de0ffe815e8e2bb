"""Ahead-of-time compiled generators: same pixels as eager mode, built once, reused, rebuilt
when damaged, and never required (any failure renders in eager mode)."""

from __future__ import annotations

import copy
import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from conftest import unavailable
from geotiffs import identity_model, noise_rgb, write_geotiff

from geomap_gan.cli import cli
from geomap_gan.model import aot
from geomap_gan.model.modelfile import load_model
from geomap_gan.rendering.engine import RenderOptions, render
from geomap_gan.rendering.inference import BUILD_STATUS


@pytest.fixture(autouse=True)
def _compiler() -> None:
    """Compiling needs AOTInductor (torch >= 2.6) and a C++ compiler: skip without them, except
    under CI, which installs g++ (scripts/test)."""
    missing = "torch without AOTInductor" if not aot.available() else None
    if missing is None and not (shutil.which("g++") or shutil.which("c++")):
        missing = "no C++ compiler"
    if missing:
        unavailable(missing, "CI must be able to compile the generator")


def opts(**kw) -> RenderOptions:
    return RenderOptions(overlap=8, batch_size=4, device="cpu", amp=False, overwrite=True, **kw)


def read(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def test_compiled_render_matches_eager_and_is_reused(
    tmp_path, tiny_model_file, _private_compile_cache, caplog, monkeypatch
):
    realigned = []  # the runner's weights moved to aligned copies at each load (aot docstring)
    real = aot._realign_constants

    def recording(runner):
        realigned.append(real(runner))
        return realigned[-1]

    monkeypatch.setattr(aot, "_realign_constants", recording)
    model = load_model(tiny_model_file)
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(70, 90))
    eager_run = render(src, tmp_path / "eager.tif", model, opts(compile=False))
    assert (eager_run.generator, eager_run.compile_seconds) == ("eager", None)
    assert not _private_compile_cache.exists()
    heard: list[object] = []  # status lines and progress calls, in order
    with caplog.at_level(logging.INFO, logger="geomap_gan"):
        built = render(src, tmp_path / "built.tif", model, opts(compile=True),
                       progress=lambda d, t: heard.append((d, t)), status=heard.append)  # fmt: skip
        # the build is announced on the progress line before the windows start
        assert heard[0] == BUILD_STATUS and heard[1] == (0, built.windows)
        assert built.generator == "compiled" and 0 < (built.compile_seconds or 0) < built.seconds
        announced = [
            r for r in caplog.records if "compiling the generator for this CPU" in r.message
        ]
        assert len(announced) == 1 and announced[0].levelno == logging.WARNING  # seen without -v
        libraries = sorted(_private_compile_cache.iterdir())
        # the library and its checksum, no temp file beside them
        assert [p.suffix for p in libraries] == [".sha256", ".so"]
        caplog.clear()
        # compile=None on a small scene: too small to build, but a cached library is used
        reused = render(
            src, tmp_path / "reused.tif", model, opts(compile=None), status=heard.append
        )
        assert "using the compiled generator" in caplog.text and "compiling" not in caplog.text
        assert (reused.generator, reused.compile_seconds) == ("compiled", None)
        assert heard.count(BUILD_STATUS) == 1
    assert len(realigned) == 2 and all(len(weights) > 0 for weights in realigned)
    eager = read(tmp_path / "eager.tif").astype(int)
    for name in ("built.tif", "reused.tif"):
        assert np.abs(read(tmp_path / name) - eager).max() <= 1, name


def test_small_scenes_do_not_build_by_default(tmp_path, tiny_model_file, _private_compile_cache):
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(40, 40))
    render(src, tmp_path / "out.tif", load_model(tiny_model_file), opts(compile=None))
    assert not _private_compile_cache.exists()


def test_package_key_follows_weights_and_input_shape(tiny_model_file):
    net = load_model(tiny_model_file).generator.eval()
    x4 = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    same = copy.deepcopy(net)
    changed = copy.deepcopy(net)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    assert aot.package_key(net, x4) == aot.package_key(same, x4)
    assert aot.package_key(net, x4) != aot.package_key(changed, x4)
    assert aot.package_key(net, x4) != aot.package_key(net, torch.zeros(8, 3, 32, 32).byte())


def test_damaged_library_is_removed_and_rebuilt(tmp_path, tiny_model_file, caplog):
    """A library left damaged by an earlier process (one this process has loaded cannot be
    swapped under it) is removed, rebuilt and gives the same pixels."""
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(40, 40))
    build = (
        "from geomap_gan.rendering.engine import RenderOptions, render; "
        f"render({str(src)!r}, {str(tmp_path / 'a.tif')!r}, {str(tiny_model_file)!r}, "
        "RenderOptions(overlap=8, batch_size=4, device='cpu', amp=False, compile=True))"
    )
    subprocess.run([sys.executable, "-c", build], check=True, timeout=300)
    (library,) = aot.cache_dir().glob("*.so")
    whole = library.read_bytes()
    # a truncated copy still looks like a library: loading it was a bus error (exit 135) in every
    # later render, in a fresh process; garbage is refused by the loader itself
    for damaged in (whole[: len(whole) // 2], b"not a library"):
        library.write_bytes(damaged)
        (tmp_path / "b.tif").unlink(missing_ok=True)
        script = "import logging; logging.basicConfig(); " + build.replace("a.tif", "b.tif")
        again = subprocess.run([sys.executable, "-c", script],
                               capture_output=True, text=True, timeout=300)  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert "damaged or incomplete" in again.stderr
        assert library.read_bytes() != damaged and library.stat().st_size > 1000  # rebuilt
        np.testing.assert_array_equal(read(tmp_path / "a.tif"), read(tmp_path / "b.tif"))


def test_failed_compile_renders_in_eager_mode(tmp_path, monkeypatch, caplog):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(aot, "build", no_compiler)
    data = noise_rgb(40, 50)
    src = write_geotiff(tmp_path / "in.tif", data)
    result = render(src, tmp_path / "out.tif", identity_model(), opts(compile=True))
    np.testing.assert_array_equal(read(tmp_path / "out.tif"), data)
    assert "compiling the generator failed" in caplog.text
    assert result.generator == "eager" and result.compile_seconds is not None  # it tried


def test_render_json_says_how_the_generator_ran_and_that_it_was_built(
    tmp_path, tiny_model_file, monkeypatch
):
    """`render --progress json`: a status event while the library builds, before the first
    progress event; the result says eager (the build failed here) and how long it tried. On a
    terminal the status is the progress line's text, and the summary says it too."""

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(aot, "build", no_compiler)
    model = tiny_model_file
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(40, 50))
    cmd = ["render", str(src), str(tmp_path / "out.tif"), "--model", str(model), "--compile",
           "--no-amp", "--overlap", "8", "--progress", "json"]  # fmt: skip
    result = CliRunner().invoke(cli, cmd)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events if e["event"] in ("status", "progress", "result")]
    assert kinds[0] == "status" and kinds[1] == "progress" and kinds[-1] == "result"
    assert events[[e["event"] for e in events].index("status")]["message"] == BUILD_STATUS
    assert events[-1]["generator"] == "eager" and events[-1]["compile_seconds"] >= 0
    bar = CliRunner().invoke(cli, [*cmd[:-2], "--overwrite"])  # the terminal's progress line
    assert bar.exit_code == 0, bar.output
    assert f"render: {BUILD_STATUS}" in bar.output and "(eager, built in" in bar.output
    plain = CliRunner().invoke(cli, [*cmd[:-2], "--no-compile", "--overwrite", "--json"])
    assert plain.exit_code == 0, plain.output
    summary = json.loads(plain.output[plain.output.index("{") :])
    assert summary["generator"] == "eager" and summary["compile_seconds"] is None


def test_compile_command_builds_what_render_then_uses(
    tmp_path, tiny_model_file, _private_compile_cache, caplog
):
    cmd = ["compile", "--model", str(tiny_model_file), "--overlap", "8", "--batch-size", "4"]
    result = CliRunner().invoke(cli, [*cmd, "--no-amp"])
    assert result.exit_code == 0, result.output
    assert sorted(p.suffix for p in _private_compile_cache.iterdir()) == [".sha256", ".so"]
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(40, 40))
    caplog.clear()  # the compile command's own announcement
    with caplog.at_level(logging.INFO, logger="geomap_gan"):
        render(src, tmp_path / "out.tif", load_model(tiny_model_file), opts(compile=None))
    assert "using the compiled generator" in caplog.text and "compiling" not in caplog.text


def test_compile_command_reports_a_failed_build(tiny_model_file, monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(aot, "build", no_compiler)
    cmd = ["compile", "--model", str(tiny_model_file), "--overlap", "8"]
    result = CliRunner().invoke(cli, cmd)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("Error: the generator could not be")
    assert "Traceback" not in result.output
