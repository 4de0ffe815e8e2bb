"""The QGIS plugin's engine side without QGIS: finding the engine, the child's environment, one
render run through ``geomap-gan render --progress json`` (events, cancel, errors) and the set-up
commands. These modules import no QGIS, so they run everywhere; tests/test_qgis_plugin.py runs
the same code inside a real QGIS."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, unavailable
from geotiffs import noise_rgb, write_geotiff

sys.path.insert(0, str(ROOT / "qgis_plugin"))
from geomap_gan_qgis import engine, installer  # noqa: E402

ENGINE = Path(sys.prefix) / "bin" / "geomap-gan"  # the CLI of the environment running the tests


@pytest.fixture
def cli() -> Path:
    if not ENGINE.is_file():
        unavailable(f"no {ENGINE}: the tests run outside the project's venv",
                    "CI runs the suite in the venv that scripts/test installs")  # fmt: skip
    return ENGINE


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_engine_order_env_setting_path_then_setup_venv(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    on_path = _executable(bin_dir / "geomap-gan")
    venv = tmp_path / "venv"
    env = {"PATH": str(bin_dir), engine.ENV_VARIABLE: "/opt/env/geomap-gan"}
    assert engine.find_engine("/opt/setting/geomap-gan", venv, env) == Path("/opt/env/geomap-gan")
    del env[engine.ENV_VARIABLE]
    assert engine.find_engine("/opt/setting/geomap-gan", venv, env) == Path(
        "/opt/setting/geomap-gan"
    )
    assert engine.find_engine(None, venv, env) == on_path
    env["PATH"] = str(tmp_path / "empty")
    assert engine.find_engine(None, venv, env) is None
    (venv / "bin").mkdir(parents=True)
    made = _executable(venv / "bin" / "geomap-gan")
    assert engine.find_engine("", venv, env) == made


def test_child_env_drops_qgis_python_gdal_and_qt_variables() -> None:
    qgis_env = {
        "PATH": "/usr/bin", "HOME": "/home/u", "HTTPS_PROXY": "http://proxy:3128",
        "PYTHONHOME": "/qgis/apps/Python39", "PYTHONPATH": "/qgis/python", "GDAL_DATA": "/qgis/gdal",
        "PROJ_LIB": "/qgis/proj", "PROJ_DATA": "/qgis/proj", "QT_PLUGIN_PATH": "/qgis/qt",
        "QT_QPA_PLATFORM": "offscreen", "QGIS_PREFIX_PATH": "/qgis", "VIRTUAL_ENV": "/v",
    }  # fmt: skip
    assert engine.child_env(qgis_env) == {
        "PATH": "/usr/bin", "HOME": "/home/u", "HTTPS_PROXY": "http://proxy:3128",
    }  # fmt: skip


def _scene(tmp_path: Path) -> Path:
    return write_geotiff(tmp_path / "scene.tif", noise_rgb(96, 128))


def _render_args(cli: Path, scene: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [str(cli), "render", str(scene), str(out), "--progress", "json", "--model", str(model),
            "--overlap", "8", "--device", "cpu", *extra]  # fmt: skip


def test_run_engine_streams_events_and_returns_the_result(cli, tiny_model_file, tmp_path):
    out = tmp_path / "map.tif"
    events: list[dict] = []
    result = engine.run_engine(
        _render_args(cli, _scene(tmp_path), out, tiny_model_file), events.append, lambda: False
    )
    assert result["path"] == str(out) and (result["width"], result["height"]) == (128, 96)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == result["windows"]
    assert any(e["event"] == "log" for e in events)
    assert out.is_file()


def test_engine_error_is_one_line(cli, tiny_model_file, tmp_path):
    out = tmp_path / "map.tif"
    args = _render_args(cli, _scene(tmp_path), out, tiny_model_file, "--bands", "1,2,7")
    with pytest.raises(engine.EngineError) as err:
        engine.run_engine(args, lambda e: None, lambda: False)
    assert "7" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_an_option_the_engine_does_not_know_names_the_exit_code_and_click_message(cli, tmp_path):
    with pytest.raises(engine.EngineError) as err:
        engine.run_engine([str(cli), "render", "--bogus"], lambda e: None, lambda: False)
    assert str(err.value).startswith("the geomap-gan engine failed (exit code 2): No such option")


def test_missing_executable_is_one_line(tmp_path):
    with pytest.raises(engine.EngineError, match="cannot start the geomap-gan engine"):
        engine.run_engine([str(tmp_path / "nope")], lambda e: None, lambda: False)
    with pytest.raises(engine.EngineError, match="does not exist"):
        engine.check_executable(tmp_path / "nope")


def test_cancel_terminates_the_child_and_leaves_no_output(cli, tmp_path):
    """A scene of many windows; cancel at the first progress event: SIGTERM, engine cleans up."""
    from geomap_gan.model.modelfile import MapModel, ModelCard, build_generator, save_model

    card = ModelCard(name="slow", ngf=8, num_downs=5, tile_size=64, gsd=2.0)
    model = save_model(MapModel(build_generator(card), card), tmp_path / "m.safetensors")
    scene = write_geotiff(tmp_path / "big.tif", noise_rgb(1500, 1500))
    out = tmp_path / "out" / "map.tif"
    out.parent.mkdir()
    seen: list[dict] = []
    t0 = time.monotonic()
    with pytest.raises(engine.EngineError, match="cancelled"):
        engine.run_engine(
            _render_args(cli, scene, out, model, "--window", "128", "--batch-size", "1"),
            seen.append,
            lambda: any(e["event"] == "progress" for e in seen),
        )
    assert time.monotonic() - t0 < engine.CANCEL_GRACE_S + 60  # terminated, not run to the end
    done = [e for e in seen if e["event"] == "progress"]
    assert done and done[-1]["done"] < done[-1]["total"]
    assert list(out.parent.iterdir()) == []  # no output and no temporary file


def test_install_commands_cpu_cuda_and_explicit_torch(tmp_path):
    venv = tmp_path / "venv"
    py = str(installer.venv_python(venv))
    cpu = installer.install_commands("/usr/bin/python3", venv)
    assert cpu[0] == ["/usr/bin/python3", "-m", "venv", str(venv)]
    assert cpu[1][:4] == [py, "-m", "pip", "install"]
    assert cpu[1][-3:] == ["torch", "--index-url", installer.CPU_TORCH_INDEX]
    assert cpu[2][-1] == "geomap-gan"
    cuda = installer.install_commands("/usr/bin/python3", venv, torch="cuda")
    assert cuda[1][-1] == "torch" and "--index-url" not in cuda[1]
    pinned = installer.install_commands(
        "/usr/bin/python3", venv, "/w/geomap_gan.whl", "torch==2.13.0"
    )
    assert pinned[1][-1] == "torch==2.13.0" and pinned[2][-1] == "/w/geomap_gan.whl"


def test_a_failing_step_names_the_step_and_pip_s_reason(tmp_path):
    """A real pip run that cannot succeed: a requirement no index has."""
    venv = tmp_path / "venv"
    cmds = [[sys.executable, "-c", "pass", str(venv)],
            [sys.executable, "-m", "pip", "install", "--no-index", "geomap-gan-no-such-package"]]  # fmt: skip
    lines: list[str] = []
    with pytest.raises(engine.EngineError) as err:
        installer.run_install(cmds, lines.append, lambda: False, dict(os.environ))
    message = str(err.value)
    assert message.startswith("setting up geomap-gan failed while pip install geomap-gan-no-such")
    assert "pip found no installable version" in message and "\n" not in message
    assert any("No matching distribution" in line for line in lines)  # pip's own words logged


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("WARNING: Retrying ... NewConnectionError('<...>: Failed to establish a new connection: "
         "[Errno -3] Temporary failure in name resolution')", "no connection"),
        ("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device",
         "the disk is full"),
        ("ProxyError('Cannot connect to proxy.', OSError('Tunnel connection failed: 407 Proxy "
         "Authentication Required'))", "proxy"),
    ],
)  # fmt: skip
def test_pip_failure_reasons(line: str, reason: str) -> None:
    assert reason in installer.pip_failure(["Collecting torch", line])
