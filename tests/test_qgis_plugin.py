"""The QGIS plugin in a real, headless QGIS 3.22: provider, processing.run, cancel, errors, qgis_process.

Skips where QGIS's Python bindings are absent, but fails under CI=true (CI must run these). QGIS
needs QT_QPA_PLATFORM=offscreen without a display; the fixture sets it when unset. Every test deletes
the map layers it makes before the session's ``exitQgis()`` (a layer alive then segfaults at exit).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, require, unavailable

pytestmark = pytest.mark.qgis

PLUGIN_DIR = ROOT / "qgis_plugin"
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
NAIP = "naip_nd_2015.tif"  # 934x723, 4 bands uint8 (R,G,B,NIR), EPSG:26914, 5 m/px


def require_qgis() -> None:
    """Skip when QGIS's Python bindings cannot be imported; fail instead under CI=true."""
    try:
        import qgis.core  # noqa: F401
    except ImportError as exc:
        unavailable(f"QGIS Python bindings not available: {exc}", "CI=true requires QGIS")


@pytest.fixture(scope="session")
def qgis_plugin() -> Iterator[Any]:
    """A headless QgsApplication with Processing and the geomap-gan plugin loaded, as QGIS does."""
    require_qgis()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append(str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins"))
    sys.path.insert(0, str(PLUGIN_DIR))
    from processing.core.Processing import Processing

    Processing.initialize()
    import geomap_gan_qgis

    plugin = geomap_gan_qgis.classFactory(None)  # qgis_process passes no iface either
    plugin.initProcessing()  # the plugin keeps the provider referenced
    yield plugin
    plugin.unload()
    gc.collect()
    app.exitQgis()


@pytest.fixture(scope="session")
def naip(geotiff_dir: Path) -> Path:
    return require(geotiff_dir / NAIP)


def _model_file(path: Path, gsd: float) -> Path:
    """A random ngf=8 U-Net-256 (8 levels, 256 px tiles) at ``gsd`` m/px: real format, fast."""
    import torch

    from geomap_gan.modelfile import MapModel, ModelCard, build_generator, save_model
    from geomap_gan.nets import init_weights

    torch.manual_seed(0)
    card = ModelCard(name="qgis-test", ngf=8, tile_size=256, gsd=gsd)
    return save_model(MapModel(init_weights(build_generator(card)), card), path)


@pytest.fixture(scope="session")
def model_5m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same GSD as the NAIP scene: 20 windows of 256 px with the default overlap."""
    return _model_file(tmp_path_factory.mktemp("models") / "m5.safetensors", 5.0)


@pytest.fixture(scope="session")
def model_10m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twice the NAIP pixel size: output_res=model halves the grid."""
    return _model_file(tmp_path_factory.mktemp("models") / "m10.safetensors", 10.0)


class RecordingFeedback:
    """Builds a QgsProcessingFeedback that records progress and log lines (QGIS import deferred)."""

    @staticmethod
    def make() -> Any:
        from qgis.core import QgsProcessingFeedback

        class _Feedback(QgsProcessingFeedback):
            def __init__(self) -> None:
                super().__init__()
                self.infos: list[str] = []
                self.progress_values: list[float] = []
                self.progressChanged.connect(self.progress_values.append)

            def pushInfo(self, info: str) -> None:  # noqa: N802 (QGIS API)
                self.infos.append(info)
                super().pushInfo(info)

        return _Feedback()


def _run(params: dict[str, Any], feedback: Any = None) -> dict[str, Any]:
    import processing

    return processing.run("geomap_gan:render", params, feedback=feedback)


def _layer_facts(path: str | Path) -> dict[str, Any]:
    """CRS, extent, size and band count as QGIS sees them; the layer is deleted before returning."""
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(str(path), "out")
    try:
        assert layer.isValid(), f"QGIS cannot load {path} as a raster layer"
        ext = layer.extent()
        return {
            "crs": layer.crs().authid(),
            "extent": (ext.xMinimum(), ext.yMinimum(), ext.xMaximum(), ext.yMaximum()),
            "size": (layer.width(), layer.height()),
            "bands": layer.bandCount(),
            "pixel": (layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()),
        }
    finally:
        del layer
        gc.collect()


# ---- registration ----------------------------------------------------------------------------
def test_provider_registers_render_algorithm(qgis_plugin: Any) -> None:
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("geomap_gan")
    assert provider is not None and provider.name() == "geomap-gan"
    alg = registry.algorithmById("geomap_gan:render")
    assert alg is not None
    assert alg.displayName() == "Render map from satellite image"
    names = {p.name() for p in alg.parameterDefinitions()}
    assert {
        "INPUT",
        "MODEL",
        "BANDS",
        "OVERLAP",
        "BATCH_SIZE",
        "DEVICE",
        "OUTPUT_RES",
        "AOI",
    } <= names
    assert {"EXTENT", "OUTPUT"} <= names
    assert alg.canExecute() == (True, "")


def test_defaults_match_render_options(qgis_plugin: Any) -> None:
    """Same defaults as the engine (and so the CLI): the plugin keeps literals to load fast."""
    from qgis.core import QgsApplication

    from geomap_gan.render import RenderOptions

    alg = QgsApplication.processingRegistry().algorithmById("geomap_gan:render")
    opts = RenderOptions()

    def default(name: str) -> Any:
        return alg.parameterDefinition(name).defaultValue()

    assert default("OVERLAP") == opts.overlap
    assert default("BATCH_SIZE") == opts.batch_size
    assert default("DEVICE") == opts.device
    assert default("OUTPUT_RES") == opts.output_res
    assert default("FORMAT") == opts.driver
    assert default("AMP") is opts.amp
    assert default("ALLOW_UNGEOREFERENCED") is opts.allow_ungeoreferenced
    assert alg.parameterDefinition("MODEL").flags() & alg.parameterDefinition("MODEL").FlagOptional


def test_metadata_declares_processing_provider() -> None:
    import configparser

    meta = configparser.ConfigParser()
    meta.read(PLUGIN_DIR / "geomap_gan_qgis" / "metadata.txt")
    general = meta["general"]
    assert general["hasProcessingProvider"] == "yes"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["version"] == "0.1.0"
    assert (PLUGIN_DIR / "geomap_gan_qgis" / general["icon"]).is_file()


# ---- processing.run ----------------------------------------------------------------------------
@pytest.mark.parametrize("output_res", ["model", "native"])
def test_render_keeps_crs_and_extent(
    qgis_plugin: Any, naip: Path, model_10m: Path, tmp_path: Path, output_res: str
) -> None:
    out = tmp_path / f"map_{output_res}.tif"
    feedback = RecordingFeedback.make()
    results = _run(
        {
            "INPUT": str(naip),
            "MODEL": str(model_10m),
            "DEVICE": "cpu",
            "OUTPUT_RES": output_res,
            "BATCH_SIZE": 4,
            "OUTPUT": str(out),
        },
        feedback,
    )
    assert Path(results["OUTPUT"]) == out and out.is_file()
    assert results["WINDOWS"] > 0
    src, dst = _layer_facts(naip), _layer_facts(out)
    assert dst["crs"] == src["crs"] == "EPSG:26914"
    assert dst["bands"] == 4  # RGB + alpha: the NAIP scene has nodata 0
    pixel = max(dst["pixel"])
    assert pixel == pytest.approx(10.0 if output_res == "model" else 5.0)
    for a, b in zip(src["extent"], dst["extent"], strict=True):
        assert abs(a - b) <= pixel, (src["extent"], dst["extent"])
    if output_res == "native":
        assert dst["size"] == src["size"] == (934, 723)
    assert feedback.progress_values and max(feedback.progress_values) == pytest.approx(100.0)
    assert any("geomap-gan" in line for line in feedback.infos)
    assert any("rendered" in line for line in feedback.infos)  # the plugin's summary
    assert any("render grid" in line for line in feedback.infos)  # the engine's log, forwarded


def test_result_loads_as_layer(
    qgis_plugin: Any, naip: Path, model_10m: Path, tmp_path: Path
) -> None:
    """runAndLoadResults, as the toolbox does: the output is added to the project as a layer."""
    import processing
    from qgis.core import QgsProject, QgsRasterLayer

    out = tmp_path / "loaded.tif"
    project = QgsProject.instance()
    before = set(project.mapLayers())
    try:
        processing.runAndLoadResults(
            "geomap_gan:render",
            {"INPUT": str(naip), "MODEL": str(model_10m), "DEVICE": "cpu", "OUTPUT": str(out)},
        )
        added = [project.mapLayer(i) for i in set(project.mapLayers()) - before]
        assert len(added) == 1
        layer = added[0]
        assert isinstance(layer, QgsRasterLayer) and layer.isValid()
        assert Path(layer.source()) == out
        assert layer.crs().authid() == "EPSG:26914"
        del layer, added
    finally:
        project.removeAllMapLayers()
        gc.collect()


def test_aoi_layer_limits_rendered_tiles(
    qgis_plugin: Any, naip: Path, model_5m: Path, tmp_path: Path
) -> None:
    """A polygon in another CRS (WGS 84) over the scene's west third: fewer tiles, same grid."""
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsFeature,
        QgsGeometry,
        QgsProject,
        QgsRectangle,
        QgsVectorLayer,
    )

    src = _layer_facts(naip)
    xmin, ymin, xmax, ymax = src["extent"]
    west = QgsGeometry.fromRect(QgsRectangle(xmin, ymin, xmin + (xmax - xmin) / 3, ymax))
    west.transform(
        QgsCoordinateTransform(
            QgsCoordinateReferenceSystem("EPSG:26914"),
            QgsCoordinateReferenceSystem("EPSG:4326"),
            QgsProject.instance(),
        )
    )
    aoi = QgsVectorLayer("Polygon?crs=EPSG:4326", "aoi", "memory")
    feature = QgsFeature()
    feature.setGeometry(west)
    aoi.dataProvider().addFeatures([feature])
    try:
        base = {"INPUT": str(naip), "MODEL": str(model_5m), "DEVICE": "cpu", "BATCH_SIZE": 4}
        full = _run({**base, "OUTPUT": str(tmp_path / "full.tif")})
        part = _run({**base, "AOI": aoi, "OUTPUT": str(tmp_path / "aoi.tif")})
        both = _run(
            {
                **base,
                "AOI": aoi,
                "EXTENT": f"{xmin},{xmin + 300},{ymax - 300},{ymax} [EPSG:26914]",
                "OUTPUT": str(tmp_path / "both.tif"),
            }
        )
        from qgis.core import QgsProcessingException

        with pytest.raises(QgsProcessingException, match="do not overlap"):
            _run(
                {
                    **base,
                    "AOI": aoi,
                    "EXTENT": f"{xmax - 300},{xmax},{ymin},{ymin + 300} [EPSG:26914]",
                    "OUTPUT": str(tmp_path / "none.tif"),
                }
            )
    finally:
        del aoi
        gc.collect()
    assert full["WINDOWS_SKIPPED"] == 0
    assert 0 < part["WINDOWS"] < full["WINDOWS"]
    assert 0 < both["WINDOWS"] < part["WINDOWS"]
    assert _layer_facts(tmp_path / "aoi.tif")["crs"] == "EPSG:26914"
    assert not (tmp_path / "none.tif").exists()


def test_cancel_mid_run_leaves_no_output(
    qgis_plugin: Any, naip: Path, model_5m: Path, tmp_path: Path
) -> None:
    """Cancel at the first progress report: the engine stops within a batch, nothing is left."""
    from qgis.core import QgsProcessingException

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    feedback = RecordingFeedback.make()
    feedback.progressChanged.connect(lambda p: feedback.cancel() if 0 < p < 100 else None)
    with pytest.raises(QgsProcessingException) as excinfo:
        _run(
            {
                "INPUT": str(naip),
                "MODEL": str(model_5m),
                "DEVICE": "cpu",
                "BATCH_SIZE": 2,  # 20 windows: 10 batches
                "OUTPUT": str(out_dir / "map.tif"),
            },
            feedback,
        )
    assert "cancel" in str(excinfo.value).lower()
    assert feedback.isCanceled()
    assert max(feedback.progress_values) < 100
    assert list(out_dir.iterdir()) == []  # neither the output nor a temporary file


def test_engine_error_becomes_processing_exception_with_cli_message(
    qgis_plugin: Any, naip: Path, model_5m: Path, tmp_path: Path
) -> None:
    """Band 9 of a 4-band raster: the same one-line message the engine (and so the CLI) gives."""
    from qgis.core import QgsProcessingException

    from geomap_gan.errors import GeomapGanError
    from geomap_gan.render import RenderOptions, render

    with pytest.raises(GeomapGanError) as engine:
        render(naip, tmp_path / "direct.tif", model_5m, RenderOptions(bands=(1, 2, 9)))
    with pytest.raises(QgsProcessingException) as plugin:
        _run(
            {
                "INPUT": str(naip),
                "MODEL": str(model_5m),
                "BANDS": "1,2,9",
                "OUTPUT": str(tmp_path / "map.tif"),
            }
        )
    assert str(plugin.value) == str(engine.value)
    assert "\n" not in str(plugin.value)
    assert not (tmp_path / "map.tif").exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"BANDS": "red,green"}, "BANDS must be 1-based band numbers"),
        ({"MODEL": "{tmp}/missing.safetensors"}, "missing.safetensors"),
        ({"INPUT": "{tmp}/not_a_raster.tif"}, "INPUT"),
    ],
)
def test_bad_input_raises_processing_exception(
    qgis_plugin: Any,
    naip: Path,
    model_5m: Path,
    tmp_path: Path,
    params: dict[str, str],
    message: str,
) -> None:
    from qgis.core import QgsProcessingException

    (tmp_path / "not_a_raster.tif").write_text("this is not a GeoTIFF\n")
    full = {"INPUT": str(naip), "MODEL": str(model_5m), "OUTPUT": str(tmp_path / "map.tif")}
    full.update({k: v.format(tmp=tmp_path) for k, v in params.items()})
    with pytest.raises(QgsProcessingException, match=message):
        _run(full)
    assert not (tmp_path / "map.tif").exists()


# ---- a QGIS whose Python lacks geomap_gan or torch ---------------------------------------------
def test_plugin_loads_without_torch_and_says_what_to_install(tmp_path: Path) -> None:
    """QGIS's own /usr/bin/python3, no venv: the plugin loads; the algorithm names what is missing.

    First without the project on sys.path (geomap_gan missing), then with it (geomap_gan present,
    its dependencies such as torch missing).
    """
    require_qgis()
    python = Path("/usr/bin/python3")
    if not python.is_file():
        unavailable("no /usr/bin/python3 (QGIS's Python)", "CI installs QGIS from Debian")
    probe = subprocess.run(
        [str(python), "-c", "import qgis.core, importlib.util as u; print(u.find_spec('torch'))"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or probe.stdout.strip() != "None":
        unavailable(
            "/usr/bin/python3 cannot import qgis, or already has torch",
            "CI's system Python has QGIS and no torch (torch lives in the venv)",
        )
    script = textwrap.dedent(
        f"""
        import json, sys
        from qgis.core import QgsApplication, QgsProcessingException
        app = QgsApplication([], False)
        app.initQgis()
        sys.path.append({str(Path("/usr/share/qgis/python/plugins"))!r})
        sys.path.insert(0, {str(PLUGIN_DIR)!r})
        from processing.core.Processing import Processing
        Processing.initialize()
        import processing
        import geomap_gan_qgis
        plugin = geomap_gan_qgis.classFactory(None)
        plugin.initProcessing()
        alg = QgsApplication.processingRegistry().algorithmById("geomap_gan:render")
        report = {{"registered": alg is not None}}
        params = {{"INPUT": {str(require(ROOT.parent / "shared" / "data" / "geotiff" / NAIP))!r},
                   "OUTPUT": {str(tmp_path / "map.tif")!r}}}
        for case in ("bare", "with_project"):
            if case == "with_project":
                sys.path.insert(0, {str(ROOT)!r})
            report[case + "_can_execute"] = list(alg.canExecute())
            try:
                processing.run("geomap_gan:render", params)
                report[case] = "ran"
            except QgsProcessingException as exc:
                report[case] = str(exc)
        plugin.unload()
        app.exitQgis()
        print(json.dumps(report))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    proc = subprocess.run(
        [str(python), "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,  # `python -c` puts the working directory first on sys.path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["registered"]
    bare, with_project = report["bare"], report["with_project"]
    assert "cannot import the geomap-gan package ('geomap_gan')" in bare
    assert "cannot import PyTorch ('torch')" in with_project  # geomap_gan.render imports torch
    for message in (bare, with_project):
        assert "pip install" in message and "--system-site-packages" in message
        assert "PYTHONPATH=" in message and "\n" not in message
    assert report["bare_can_execute"][0] is False
    assert "geomap_gan" in report["bare_can_execute"][1]
    assert report["with_project_can_execute"][0] is False
    assert "torch" in report["with_project_can_execute"][1]
    assert not (tmp_path / "map.tif").exists()


# ---- qgis_process ------------------------------------------------------------------------------
def test_qgis_process_cli_runs_render(naip: Path, model_5m: Path, tmp_path: Path) -> None:
    """The way a user scripts QGIS: qgis_process.bin with a fresh profile enabling the plugin."""
    require_qgis()
    if not QGIS_PROCESS.is_file():
        unavailable(f"{QGIS_PROCESS} not installed", "CI=true requires QGIS")
    home = tmp_path / "home"
    profile = home / ".local/share/QGIS/QGIS3/profiles/default/QGIS"
    profile.mkdir(parents=True)
    (profile / "QGIS3.ini").write_text("[PythonPlugins]\ngeomap_gan_qgis=true\n")
    site_packages = sysconfig.get_paths()["purelib"]  # the venv's, when pytest runs in it
    env = {
        **os.environ,
        "HOME": str(home),
        "QT_QPA_PLATFORM": "offscreen",
        "QGIS_PLUGINPATH": str(PLUGIN_DIR),
        "PYTHONPATH": os.pathsep.join([str(ROOT), site_packages]),
    }
    out = tmp_path / "map.tif"
    cmd = [
        str(QGIS_PROCESS),
        "--json",
        "run",
        "geomap_gan:render",
        "--",
        f"INPUT={naip}",
        f"MODEL={model_5m}",
        "DEVICE=cpu",
        "OUTPUT_RES=native",
        "BATCH_SIZE=4",
        f"OUTPUT={out}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert Path(report["results"]["OUTPUT"]) == out
    assert report["results"]["WINDOWS"] > 0
    import rasterio
    from rasterio.enums import ColorInterp

    with rasterio.open(naip) as a, rasterio.open(out) as b:
        assert b.crs == a.crs
        assert (b.width, b.height, b.count) == (a.width, a.height, 4)  # RGB + alpha (nodata)
        assert b.colorinterp[3] == ColorInterp.alpha
        assert b.transform.almost_equals(a.transform)
