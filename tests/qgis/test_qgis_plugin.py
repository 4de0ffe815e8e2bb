"""The QGIS plugin in a real, headless QGIS 3.22, as a user has it: QGIS's own Python
(``/usr/bin/python3``, which cannot import torch or geomap_gan), the engine in another environment
named only by ``GEOMAP_GAN_EXECUTABLE`` (or installed by "Set up geomap-gan"), and the plugin
installed from the zip that ``scripts/build_plugin.py`` writes.

Each test starts ``tests/qgis_host.py`` (QgsApplication + Processing + the plugin) with a throwaway
HOME, so QGIS's profile is fresh. Skips without QGIS, except under CI=true, where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import rasterio
from conftest import ROOT, require, unavailable

from geomap_gan.rendering.options import RenderOptions

pytestmark = pytest.mark.qgis

PLUGIN_DIR = ROOT / "qgis_plugin"
HOST = ROOT / "tests" / "qgis_host.py"
QGIS_PYTHON = Path("/usr/bin/python3")
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
ENGINE = Path(sys.prefix) / "bin" / "geomap-gan"
NAIP = "naip_nd_2015.tif"  # 934x723, 4 bands uint8 (R,G,B,NIR), EPSG:26914, 5 m/px
SYSTEM_PATH = "/usr/bin:/bin"  # QGIS's PATH in the tests: no geomap-gan on it


@pytest.fixture(scope="session")
def qgis_python() -> Path:
    """QGIS's Python: imports qgis.core, and neither torch nor geomap_gan (they live elsewhere)."""
    if not QGIS_PYTHON.is_file():
        unavailable("no /usr/bin/python3 (QGIS's Python)", "CI=true requires QGIS")
    probe = subprocess.run(
        [str(QGIS_PYTHON), "-c", "import qgis.core, importlib.util as u; "
         "print(u.find_spec('torch'), u.find_spec('geomap_gan'))"],
        capture_output=True, text=True, env=_qgis_env(Path("/tmp"), None), cwd="/",
    )  # fmt: skip
    if probe.returncode != 0:
        unavailable(
            f"QGIS's Python cannot import qgis: {probe.stderr[-300:]}", "CI=true requires QGIS"
        )
    if probe.stdout.split() != ["None", "None"]:
        pytest.fail(f"QGIS's Python can import torch or geomap_gan ({probe.stdout.strip()})")
    if not ENGINE.is_file():
        pytest.fail(f"no engine at {ENGINE}: run the tests in the project's venv")
    return QGIS_PYTHON


def _qgis_env(home: Path, engine: Path | None) -> dict[str, str]:
    """QGIS's environment: a fresh HOME (profile), no venv on any path, the engine by variable."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "GEOMAP_GAN_EXECUTABLE", "PYTHONHOME")}  # fmt: skip
    env.update(HOME=str(home), PATH=SYSTEM_PATH, QT_QPA_PLATFORM="offscreen")
    if engine is not None:
        env["GEOMAP_GAN_EXECUTABLE"] = str(engine)
    return env


def host(
    qgis_python: Path, tmp_path: Path, jobs: list[dict[str, Any]], engine: Path | None = ENGINE
) -> dict[str, Any]:
    """Run ``jobs`` in a fresh headless QGIS (see tests/qgis_host.py); its JSON report."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"plugin_path": str(PLUGIN_DIR), "jobs": jobs}))
    proc = subprocess.run(
        [str(qgis_python), str(HOST), str(spec)], capture_output=True, text=True,
        env=_qgis_env(home, engine), cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def naip(geotiff_dir: Path) -> Path:
    return require(geotiff_dir / NAIP)


def _model_file(path: Path, gsd: float) -> Path:
    """A random ngf=8, 5-level U-Net at ``gsd`` m/px: the real file format, fast to run."""
    import torch

    from geomap_gan.model.modelfile import MapModel, ModelCard, build_generator, save_model
    from geomap_gan.model.nets import init_weights

    torch.manual_seed(0)
    card = ModelCard(name="qgis-test", ngf=8, num_downs=5, tile_size=256, gsd=gsd)
    return save_model(MapModel(init_weights(build_generator(card)), card), path)


@pytest.fixture(scope="session")
def model_5m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _model_file(tmp_path_factory.mktemp("models") / "m5.safetensors", 5.0)


@pytest.fixture(scope="session")
def model_10m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twice the NAIP pixel size: OUTPUT_RES=model halves the grid."""
    return _model_file(tmp_path_factory.mktemp("models") / "m10.safetensors", 10.0)


def _render(params: dict[str, Any], cancel_at: float | None = None) -> dict[str, Any]:
    return {"alg": "geomap_gan:render", "params": params, "cancel_at": cancel_at}


# ---- the toolbox -------------------------------------------------------------------------------
def test_toolbox_shows_both_algorithms_with_drop_downs_and_the_engine_s_defaults(
    qgis_python: Path, tmp_path: Path
) -> None:
    report = host(qgis_python, tmp_path, [{"describe": True}])
    algs = report["jobs"][0]
    assert algs["geomap_gan:render"]["name"] == "Render map from satellite image"
    assert algs["geomap_gan:setup"]["name"] == "Set up geomap-gan"
    assert algs["geomap_gan:render"]["can_execute"] == [True, ""]
    params = algs["geomap_gan:render"]["params"]
    for name, options in (("DEVICE", ["auto", "cpu", "cuda"]), ("OUTPUT_RES", ["model", "native"]),
                          ("FORMAT", ["GTiff", "COG"])):  # fmt: skip
        assert params[name]["type"] == "enum" and params[name]["options"] == options
        assert params[name]["static_strings"] is True  # qgis_process takes DEVICE=cpu
    opts = RenderOptions()
    assert {n: params[n]["default"] for n in (
        "WINDOW", "OVERLAP", "BATCH_SIZE", "DEVICE", "OUTPUT_RES", "FORMAT", "AMP", "HARMONIZE",
        "ALLOW_UNGEOREFERENCED")} == {
        "WINDOW": opts.window, "OVERLAP": opts.overlap, "BATCH_SIZE": opts.batch_size,
        "DEVICE": opts.device, "OUTPUT_RES": opts.output_res, "FORMAT": opts.driver,
        "AMP": opts.amp, "HARMONIZE": opts.harmonize,
        "ALLOW_UNGEOREFERENCED": opts.allow_ungeoreferenced}  # fmt: skip
    assert params["WINDOW"]["advanced"] and not params["DEVICE"]["advanced"]
    setup = algs["geomap_gan:setup"]["params"]
    assert setup["TORCH"]["options"] == ["cpu", "cuda"] and setup["TORCH"]["default"] == "cpu"
    assert report["modules"] == []  # loading the plugin imports none of torch/rasterio/geomap_gan


def test_without_an_engine_the_algorithm_says_how_to_set_one_up(
    qgis_python: Path, tmp_path: Path, naip: Path
) -> None:
    """No variable, nothing on PATH, a fresh profile: the toolbox and a run say the same line."""
    out = tmp_path / "map.tif"
    report = host(qgis_python, tmp_path, [{"describe": True},
                  _render({"INPUT": str(naip), "OUTPUT": str(out)})], engine=None)  # fmt: skip
    can, why = report["jobs"][0]["geomap_gan:render"]["can_execute"]
    assert can is False and "Set up geomap-gan" in why and "GEOMAP_GAN_EXECUTABLE" in why
    assert report["jobs"][1]["error"] == why and "\n" not in why
    assert not out.exists()


# ---- rendering through the child process ------------------------------------------------------
@pytest.mark.parametrize("output_res", ["model", "native"])
def test_render_keeps_crs_and_extent_and_reports_progress(
    qgis_python: Path, tmp_path: Path, naip: Path, model_10m: Path, output_res: str
) -> None:
    out = tmp_path / f"map_{output_res}.tif"
    params = {"INPUT": str(naip), "MODEL": str(model_10m), "DEVICE": "cpu",
              "OUTPUT_RES": output_res, "WINDOW": 256, "OUTPUT": str(out)}  # fmt: skip
    report = host(qgis_python, tmp_path, [_render(params)])
    job = report["jobs"][0]
    assert "error" not in job, job.get("error")
    assert Path(job["results"]["OUTPUT"]) == out and job["results"]["WINDOWS"] > 1
    with rasterio.open(naip) as a, rasterio.open(out) as b:
        assert b.crs == a.crs
        assert b.bounds == pytest.approx(a.bounds, abs=a.res[0] if output_res == "native" else 10.0)
        expected = (a.width, a.height) if output_res == "native" else (467, 362)
        assert (b.width, b.height) == pytest.approx(expected, abs=1)
    steps = job["progress"]
    assert steps == sorted(steps) and steps[-1] == 100.0 and any(0 < s < 100 for s in steps)
    assert any("render grid" in line for line in job["infos"])  # the engine's log reached QGIS
    assert any("geomap-gan" in line and "--progress json" in line for line in job["infos"])
    assert report["modules"] == []  # the engine ran elsewhere


def test_cancel_mid_render_stops_the_child_and_leaves_no_output(
    qgis_python: Path, tmp_path: Path, naip: Path, model_5m: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    params = {"INPUT": str(naip), "MODEL": str(model_5m), "DEVICE": "cpu", "GSD": 1.0,
              "WINDOW": 256, "BATCH_SIZE": 1, "OUTPUT": str(out_dir / "map.tif")}  # fmt: skip
    job = host(qgis_python, tmp_path, [_render(params, cancel_at=0.1)])["jobs"][0]
    assert job["error"] == "cancelled; no output was written"
    assert max(job["progress"]) < 100
    assert list(out_dir.iterdir()) == []  # no output, no temporary file


def test_engine_error_arrives_as_the_cli_s_one_line(
    qgis_python: Path, tmp_path: Path, naip: Path, model_5m: Path
) -> None:
    out = tmp_path / "map.tif"
    params = {"INPUT": str(naip), "MODEL": str(model_5m), "BANDS": "1,2,9", "OUTPUT": str(out)}
    job = host(qgis_python, tmp_path, [_render(params)])["jobs"][0]
    cli = subprocess.run(
        [str(ENGINE), "render", str(naip), str(out), "--model", str(model_5m), "--bands", "1,2,9"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert cli.returncode == 2
    assert f"Error: {job['error']}" == cli.stderr.strip().splitlines()[-1]
    assert not out.exists()


def test_aoi_layer_limits_the_rendered_windows(
    qgis_python: Path, tmp_path: Path, naip: Path, model_5m: Path
) -> None:
    with rasterio.open(naip) as src:
        b, crs = src.bounds, src.crs.to_string()
    x0, y0 = b.left + 50, b.top - 800
    square = [[x0, y0], [x0 + 500, y0], [x0 + 500, y0 + 500], [x0, y0 + 500], [x0, y0]]
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name",
        "properties": {"name": crs}}, "features": [{"type": "Feature", "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [square]}}]}))  # fmt: skip
    base = {"INPUT": str(naip), "MODEL": str(model_5m), "DEVICE": "cpu", "WINDOW": 256}
    jobs = [_render({**base, "OUTPUT": str(tmp_path / "full.tif")}),
            _render({**base, "AOI": str(aoi), "OUTPUT": str(tmp_path / "aoi.tif")})]  # fmt: skip
    full, part = (j["results"] for j in host(qgis_python, tmp_path, jobs)["jobs"])
    assert 0 < part["WINDOWS"] < full["WINDOWS"]
    assert part["WINDOWS"] + part["WINDOWS_SKIPPED"] == full["WINDOWS"]


# ---- the package a user installs --------------------------------------------------------------
def test_zip_installed_in_a_fresh_profile_renders_through_qgis_process(
    qgis_python: Path, tmp_path: Path, naip: Path, model_5m: Path
) -> None:
    """Plugins > Install from ZIP, scripted: the zip unpacked into a new profile, enabled with
    qgis_process itself, then the README's headless command."""
    if not QGIS_PROCESS.is_file():
        unavailable(f"{QGIS_PROCESS} not installed", "CI=true requires QGIS")
    package = tmp_path / "geomap_gan_qgis.zip"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_plugin.py"), "--out",
                    str(package)], check=True, capture_output=True)  # fmt: skip
    home = tmp_path / "home"
    plugins = home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(package) as zf:
        names = zf.namelist()
        zf.extractall(plugins)
    assert {n.split("/")[0] for n in names} == {"geomap_gan_qgis"}
    assert not any("__pycache__" in n for n in names)
    env = _qgis_env(home, ENGINE)
    enable = subprocess.run([str(QGIS_PROCESS), "plugins", "enable", "geomap_gan_qgis"],
                            capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert enable.returncode == 0, enable.stderr[-2000:]
    out = tmp_path / "map.tif"
    cmd = [str(QGIS_PROCESS), "--json", "run", "geomap_gan:render", "--", f"INPUT={naip}",
           f"MODEL={model_5m}", "DEVICE=cpu", "OUTPUT_RES=native", "WINDOW=256",
           f"OUTPUT={out}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert Path(report["results"]["OUTPUT"]) == out and report["results"]["WINDOWS"] > 0
    with rasterio.open(naip) as a, rasterio.open(out) as b:
        assert b.crs == a.crs and (b.width, b.height, b.count) == (a.width, a.height, 4)
        assert b.transform.almost_equals(a.transform)


# ---- "Set up geomap-gan" ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's own wheel, built now (what a user's pip would fetch from the index)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=300)  # fmt: skip
    return next(out.glob("geomap_gan-*.whl"))


def test_setup_installs_the_engine_and_render_then_finds_it(
    qgis_python: Path, tmp_path: Path, naip: Path, model_5m: Path, project_wheel: Path
) -> None:
    """A fresh profile, no engine anywhere: set up from the wheel (torch as this machine's pip
    provides it, CPU), then render with nothing configured."""
    import torch

    setup = {"alg": "geomap_gan:setup", "params": {
        "PACKAGE": str(project_wheel), "TORCH_REQUIREMENT": f"torch=={torch.__version__}"}}  # fmt: skip
    out = tmp_path / "map.tif"
    params = {"INPUT": str(naip), "MODEL": str(model_5m), "DEVICE": "cpu", "WINDOW": 256,
              "OUTPUT": str(out)}  # fmt: skip
    report = host(qgis_python, tmp_path, [setup, _render(params)], engine=None)
    installed, rendered = report["jobs"]
    assert "error" not in installed, installed.get("error")
    venv = Path(report["settings_dir"]) / "geomap-gan" / "venv"
    assert Path(installed["results"]["EXECUTABLE"]) == venv / "bin" / "geomap-gan"
    assert any("Successfully installed" in line for line in installed["console"])  # pip's log
    assert "error" not in rendered, rendered.get("error")
    assert Path(rendered["results"]["OUTPUT"]) == out and out.is_file()
    assert report["modules"] == []


def test_setup_says_in_one_line_why_pip_failed(qgis_python: Path, tmp_path: Path) -> None:
    setup = {"alg": "geomap_gan:setup", "params": {"TORCH_REQUIREMENT": "torch==0.0.1"}}
    job = host(qgis_python, tmp_path, [setup], engine=None)["jobs"][0]
    assert job["error"].startswith("setting up geomap-gan failed while pip install torch==0.0.1: ")
    assert "pip found no installable version" in job["error"] and "\n" not in job["error"]
