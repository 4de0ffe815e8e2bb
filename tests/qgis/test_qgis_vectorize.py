"""The "Vectorize map" algorithm and the render algorithm's vector output in a real, headless QGIS
3.22, the engine in its own process (as tests/qgis/test_qgis_plugin.py does for render): the
toolbox, layers made from a crafted map and loaded into the project in the legend's colours and
order, the render's optional GeoPackage, and an engine error as the CLI's line. The plugin's
copies of the legend and of the defaults are checked against the engine's without QGIS.
Skips without QGIS, except under CI=true, where it fails."""

# ruff: noqa: F811 (test_qgis_plugin's fixtures, imported, are the tests' parameters)

from __future__ import annotations

import ast
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from conftest import ROOT
from rasterio.errors import NotGeoreferencedWarning
from test_qgis_plugin import (  # noqa: F401 (fixtures)
    ENGINE,
    host,
    model_5m,
    naip,
    qgis_python,
)

from geomap_gan.legend import BACKGROUND, CLASSES, COLOURS, DRAW_ORDER
from geomap_gan.vector import VectorizeOptions

PLUGIN = ROOT / "qgis_plugin" / "geomap_gan_qgis"


def literal(path: Path, name: str) -> Any:
    """A module-level literal of a plugin file, read without importing it (no QGIS needed)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} no longer defines {name}")


# ---- the plugin's copies agree with the engine (no QGIS needed) ------------------------------
def test_the_plugin_s_colours_and_defaults_are_the_engine_s() -> None:
    colours = literal(PLUGIN / "styles.py", "LEGEND_COLOURS")
    assert colours == COLOURS
    assert tuple(literal(PLUGIN / "styles.py", "CLASSES")) == CLASSES
    assert tuple(literal(PLUGIN / "styles.py", "TOP_TO_BOTTOM")) == tuple(reversed(DRAW_ORDER))
    opts, alg = VectorizeOptions(), PLUGIN / "vectorize_algorithm.py"
    assert literal(alg, "DEFAULT_MIN_AREA") == opts.min_area
    assert literal(alg, "DEFAULT_SIMPLIFY") == opts.simplify
    assert literal(alg, "DEFAULT_MIN_LENGTH") == opts.min_length


# ---- in QGIS ----------------------------------------------------------------------------------
def load_host(qgis_python: Path, tmp_path: Path, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Run ``jobs`` in a fresh headless QGIS that loads their results into its project, as the
    toolbox does (tests/qgis_host.py, jobs with ``load``)."""
    return host(qgis_python, tmp_path, [{**job, "load": True} for job in jobs])


def crafted_map(path: Path, bands: int = 3) -> Path:
    """A 60x60 map at 2 m in UTM: a lake, a park, a road and a highway crossing it (drawn over
    it: the road is two lines)."""
    img = np.empty((60, 60, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    img[5:20, 5:20] = COLOURS["water"]
    img[30:50, 5:25] = COLOURS["park"]
    img[24:28, 0:60] = COLOURS["road"]
    img[0:60, 40:46] = COLOURS["highway"]
    data = np.moveaxis(img, -1, 0)[:bands]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=60, height=60, count=bands,
                           dtype="uint8", crs="EPSG:32633",
                           transform=Affine(2, 0, 500000, 0, -2, 5000000)) as ds:  # fmt: skip
            ds.write(data)
    return path


@pytest.mark.qgis
def test_toolbox_shows_vectorize_and_the_render_s_vector_output(
    qgis_python: Path, tmp_path: Path
) -> None:
    algs = load_host(qgis_python, tmp_path, [{"describe": True}])["jobs"][0]
    alg = algs["geomap_gan:vectorize"]
    assert alg["name"] == "Vectorize map" and alg["can_execute"] == [True, ""]
    params, opts = alg["params"], VectorizeOptions()
    assert params["LAYERS"]["options"] == list(CLASSES) and params["LAYERS"]["static_strings"]
    assert (params["MIN_AREA"]["default"], params["SIMPLIFY"]["default"],
            params["MIN_LENGTH"]["default"]) == (opts.min_area, opts.simplify, opts.min_length)  # fmt: skip
    assert params["LOAD"]["default"] is True and params["ALLOW_UNGEOREFERENCED"]["advanced"]
    assert "VECTORS" in algs["geomap_gan:render"]["params"]


@pytest.mark.qgis
def test_vectorize_map_loads_the_layers_in_the_legend_s_colours_and_order(
    qgis_python: Path, tmp_path: Path
) -> None:
    src = crafted_map(tmp_path / "crafted.tif")
    out = tmp_path / "layers.gpkg"
    job = {"alg": "geomap_gan:vectorize", "params": {"INPUT": str(src), "OUTPUT": str(out)}}
    report = load_host(qgis_python, tmp_path, [job])
    run = report["jobs"][0]
    assert "error" not in run, run.get("error")
    counts = {k: run["results"][k.upper()] for k in CLASSES}
    assert counts == {"road": 2, "water": 1, "park": 1, "highway": 1}  # the highway cuts the road
    assert Path(run["results"]["OUTPUT"]) == out
    assert sorted(n for n, _ in pyogrio.list_layers(out)) == sorted(CLASSES)
    steps = run["progress"]  # the engine's (one strip: 60 rows), then QGIS loading 4 layers
    assert steps[0] == 100.0 and steps[1:] == [0.0, 25.0, 50.0, 75.0, 100.0][: len(steps) - 1]
    assert any("vectorize" in line and "--progress json" in line for line in run["infos"])
    layers = {entry["name"]: entry for entry in run["layers"]}
    assert [e["name"] for e in run["layers"]] == [f"layers {c}" for c in reversed(DRAW_ORDER)]
    for name in CLASSES:
        entry = layers[f"layers {name}"]
        assert entry["source"].endswith(f"layers.gpkg|layername={name}")
        assert entry["features"] == counts[name]
        if name in ("water", "park"):
            assert entry["geometry"] == 2 and entry["colours"] == [list(COLOURS[name])]
        else:  # a darker casing under the line in the class's colour
            assert entry["geometry"] == 1 and entry["colours"][-1] == list(COLOURS[name])
            assert len(entry["colours"]) == 2
    assert report["modules"] == []  # the engine ran elsewhere


@pytest.mark.qgis
def test_only_the_chosen_layers_and_no_loading_when_asked(
    qgis_python: Path, tmp_path: Path
) -> None:
    src = crafted_map(tmp_path / "crafted.tif")
    out = tmp_path / "water.gpkg"
    params = {
        "INPUT": str(src),
        "LAYERS": ["water", "highway"],
        "MIN_AREA": 1000.0,
        "LOAD": False,
        "OUTPUT": str(out),
    }  # fmt: skip  (the lake: 30 m x 30 m)
    run = load_host(qgis_python, tmp_path, [{"alg": "geomap_gan:vectorize", "params": params}])
    job = run["jobs"][0]
    assert "error" not in job, job.get("error")
    counts = (job["results"]["WATER"], job["results"]["HIGHWAY"], job["results"]["ROAD"])
    assert counts == (0, 1, 0)
    assert sorted(n for n, _ in pyogrio.list_layers(out)) == ["highway", "water"]
    assert job["layers"] == []


@pytest.mark.qgis
def test_a_bad_map_is_the_cli_s_one_line(qgis_python: Path, tmp_path: Path) -> None:
    src = crafted_map(tmp_path / "gray.tif", bands=1)
    out = tmp_path / "layers.gpkg"
    job = {"alg": "geomap_gan:vectorize", "params": {"INPUT": str(src), "OUTPUT": str(out)}}
    run = load_host(qgis_python, tmp_path, [job])["jobs"][0]
    cli = subprocess.run([str(ENGINE), "vectorize", str(src), str(out)], capture_output=True,
                         text=True)  # fmt: skip
    assert cli.returncode == 2
    assert f"Error: {run['error']}" == cli.stderr.strip().splitlines()[-1]
    assert "3-band" in run["error"] and not out.exists()


@pytest.mark.qgis
def test_render_with_a_vector_output_loads_map_and_layers(
    qgis_python: Path, tmp_path: Path, naip: Path, model_5m: Path
) -> None:
    out, vectors = tmp_path / "map.tif", tmp_path / "map_layers.gpkg"
    params = {"INPUT": str(naip), "MODEL": str(model_5m), "DEVICE": "cpu", "WINDOW": 256,
              "OUTPUT": str(out), "VECTORS": str(vectors)}  # fmt: skip
    run = load_host(qgis_python, tmp_path, [{"alg": "geomap_gan:render", "params": params}])
    job = run["jobs"][0]
    assert "error" not in job, job.get("error")
    assert Path(job["results"]["OUTPUT"]) == out and Path(job["results"]["VECTORS"]) == vectors
    assert sorted(n for n, _ in pyogrio.list_layers(vectors)) == sorted(CLASSES)
    names = [e["name"] for e in job["layers"]]
    assert names[:4] == [f"map_layers {c}" for c in reversed(DRAW_ORDER)]
    assert len(names) == 5  # and the rendered map
    steps = job["progress"]
    engine = steps[: steps.index(100.0) + 1]  # then QGIS's, loading the layers
    assert engine == sorted(engine) and any(85 <= s < 100 for s in engine)  # vectorize's share
    assert any("--vectors" in line for line in job["infos"])
    # without VECTORS the render is as before: no GeoPackage, no vector layer
    params2 = {**params, "OUTPUT": str(tmp_path / "plain.tif")}
    del params2["VECTORS"]
    job2 = load_host(qgis_python, tmp_path, [{"alg": "geomap_gan:render", "params": params2}])
    assert len(job2["jobs"][0]["layers"]) == 1 and not (tmp_path / "plain.gpkg").exists()
