"""``geomap-gan vectorize`` and the render commands' ``--vectors``, through click's CliRunner, on
tiny crafted maps (exact geometry where exact), every bad input as one line with exit code 2 and
no file left; ``render --vectors`` with an identity "model" (the map is the painted scene, so its
layers are known exactly); ``render-many --vectors`` on a one-worker local Dask cluster."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import vector_maps
from affine import Affine
from click.testing import CliRunner
from geotiffs import identity_model
from vector_maps import canvas, paint

from geomap_gan.cli import cli
from geomap_gan.legend import BACKGROUND, CLASSES, COLOURS
from geomap_gan.vector import VectorizeOptions, defaults
from geomap_gan.vector.options import DRIVERS

GSD = 2.0
TRANSFORM = Affine(GSD, 0, 500000.0, 0, -GSD, 5000000.0)


def painted(height: int = 40, width: int = 40) -> np.ndarray:
    """A map (rows, cols, 3): a 10x10 lake with a 2x2 island... too small to keep, a park, a
    road and a highway."""
    img = canvas(height, width)
    for name, rows, cols in (("water", slice(5, 15), slice(5, 15)),
                             ("park", slice(20, 30), slice(5, 15)),
                             ("road", slice(18, 22), slice(20, 40)),
                             ("highway", slice(0, 40), slice(32, 37))):  # fmt: skip
        paint(img, name, rows, cols)
    return img


def write_map(path: Path, img: np.ndarray, crs: str | None = "EPSG:32633", **kw: object) -> Path:
    """vector_maps.write_map on this module's 2 m grid."""
    return vector_maps.write_map(path, img, crs, TRANSFORM, **kw)


def layer(path: Path, name: str | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    meta, _, wkb, values = pyogrio.raw.read(path, layer=name)
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.array([], dtype=object)
    return geoms, dict(zip(meta["fields"], values, strict=True))


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def map_tif(tmp_path: Path) -> Path:
    return write_map(tmp_path / "map.tif", painted())


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# ---- vectorize -----------------------------------------------------------------------------------
def test_vectorize_writes_every_layer_with_exact_polygons(map_tif: Path, out: Path) -> None:
    result = invoke("vectorize", map_tif, out / "m.gpkg", "--simplify", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {out / 'm.gpkg'}: ")
    assert "1 water" in result.stdout and "1 highway" in result.stdout
    assert sorted(n for n, _ in pyogrio.list_layers(out / "m.gpkg")) == sorted(CLASSES)
    water, fields = layer(out / "m.gpkg", "water")
    x0, y0 = TRANSFORM @ (5, 5)
    x1, y1 = TRANSFORM @ (15, 15)
    assert len(water) == 1 and water[0].equals(shapely.box(x0, y1, x1, y0))
    assert fields["class"].tolist() == ["water"] and fields["area_m2"][0] == pytest.approx(400)
    roads, rf = layer(out / "m.gpkg", "road")
    assert shapely.get_type_id(roads).tolist() == [1] and rf["width_m"][0] == pytest.approx(
        4 * GSD, abs=GSD / 2
    )
    assert pyogrio.read_info(out / "m.gpkg", layer="water")["crs"] == "EPSG:32633"
    assert sorted(p.name for p in out.iterdir()) == ["m.gpkg"]


def test_options_reach_the_library(tmp_path: Path, out: Path) -> None:
    img = painted()
    img[30:33, 20:23] = COLOURS["water"]  # a 3x3 pond: 36 m²
    src = write_map(tmp_path / "m.tif", img)
    result = invoke("vectorize", src, out / "w.geojson", "--layers", "water", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["features"] == {"water": 2} and data["paths"] == {"water": str(out / "w.geojson")}
    result = invoke("vectorize", src, out / "w.geojson", "--layers", "water", "--min-area", "40",
                    "--overwrite", "--json")  # fmt: skip
    assert json.loads(result.stdout)["features"] == {"water": 1}
    # single-layer format, two layers: one file each, beside OUT
    result = invoke("vectorize", src, out / "l.fgb", "--layers", "road,highway", "-q")
    assert result.exit_code == 0 and result.output == ""
    assert sorted(p.name for p in out.iterdir()) == ["l_highway.fgb", "l_road.fgb", "w.geojson"]
    # --simplify 0 keeps every pixel corner; --min-length prunes a stub
    img = painted()
    img[10:13, 20:24] = COLOURS["road"]  # a lone 4 px (7.6 m) stroke
    src = write_map(tmp_path / "stub.tif", img)
    counts = {}
    for length in ("0", "8"):
        r = invoke("vectorize", src, out / f"s{length}.gpkg", "--layers", "road",
                   "--min-length", length, "--json")  # fmt: skip
        counts[length] = json.loads(r.stdout)["features"]["road"]
    assert counts["8"] == 1 and counts["0"] >= 2  # the stub (and spurs) kept only at 0


def test_progress_bar_json_events_and_quiet(map_tif: Path, out: Path) -> None:
    result = invoke("vectorize", map_tif, out / "a.gpkg")
    assert "vectorize" in result.stderr and "row" in result.stderr  # the tqdm bar
    result = invoke("vectorize", map_tif, out / "b.gpkg", "--progress", "json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 40
    assert all(e["stage"] == "vectorize" for e in progress)
    assert events[-1]["event"] == "result" and events[-1]["features"]["water"] == 1
    result = invoke("-q", "vectorize", map_tif, out / "c.gpkg")
    assert result.exit_code == 0 and result.output == ""


def test_help_has_an_example_and_the_library_s_defaults() -> None:
    result = invoke("vectorize", "--help")
    assert "Example:" in result.output and "geomap-gan vectorize map.tif map.gpkg" in result.output
    opts = VectorizeOptions()
    library = (opts.min_area, opts.simplify, opts.min_length)
    assert library == (defaults.MIN_AREA, defaults.SIMPLIFY, defaults.MIN_LENGTH)
    assert tuple(defaults.LAYERS.split(",")) == CLASSES == opts.layers
    assert tuple(DRIVERS) == defaults.SUFFIXES
    for text in ("[default: 15.0]", "[default: 1.0]", "[default: 8.0]"):
        assert text in " ".join(result.output.split())


def refused(args: list[object], folder: Path) -> str:
    """The CLI's one error line (exit 2, no traceback), checking that ``folder`` is unchanged."""
    before = sorted(folder.iterdir())
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert sorted(folder.iterdir()) == before
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_bad_input_is_one_line_exit_2_and_no_file(tmp_path: Path, map_tif: Path, out: Path) -> None:
    img = painted()
    gray = write_map(tmp_path / "gray.tif", img[..., :1])
    assert "3-band" in refused(["vectorize", gray, out / "m.gpkg"], out)
    u16 = write_map(tmp_path / "u16.tif", img.astype(np.uint16))
    assert "8-bit" in refused(["vectorize", u16, out / "m.gpkg"], out)
    bare = write_map(tmp_path / "bare.tif", img, crs=None)
    assert "no CRS" in refused(["vectorize", bare, out / "m.gpkg"], out)
    assert "suffix .kml" in refused(["vectorize", map_tif, out / "m.kml"], out)
    assert "unknown map class roads" in refused(
        ["vectorize", map_tif, out / "m.gpkg", "--layers", "water,roads"], out
    )
    assert "min_area must be" in refused(
        ["vectorize", map_tif, out / "m.gpkg", "--min-area", "-1"], out
    )
    assert "nope.tif" in refused(["vectorize", tmp_path / "nope.tif", out / "m.gpkg"], out)
    tiff_gpkg = write_map(tmp_path / "map.gpkg", img)  # a GeoTIFF by content
    assert "is the input" in refused(["vectorize", tiff_gpkg, tiff_gpkg, "--overwrite"], tmp_path)
    (out / "m.gpkg").write_text("mine")
    assert "exists; pass --overwrite" in refused(["vectorize", map_tif, out / "m.gpkg"], out)
    assert (out / "m.gpkg").read_text() == "mine"
    # the flags that allow what was refused
    assert invoke("vectorize", map_tif, out / "m.gpkg", "--overwrite").exit_code == 0
    result = invoke("vectorize", bare, out / "bare.gpkg", "--allow-ungeoreferenced", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["features"]["water"] == 1


def test_error_event_with_progress_json(tmp_path: Path, out: Path) -> None:
    gray = write_map(tmp_path / "gray.tif", painted()[..., :1])
    result = invoke("vectorize", gray, out / "m.gpkg", "--progress", "json")
    assert result.exit_code == 2
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["event"] == "error" and "3-band" in last["message"]
    assert list(out.iterdir()) == []


def test_empty_classes_give_empty_layers(tmp_path: Path, out: Path) -> None:
    img = np.empty((20, 20, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    src = write_map(tmp_path / "empty.tif", img)
    result = invoke("vectorize", src, out / "e.gpkg", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["features"] == dict.fromkeys(CLASSES, 0)
    assert sorted(n for n, _ in pyogrio.list_layers(out / "e.gpkg")) == sorted(CLASSES)


# ---- render --vectors ----------------------------------------------------------------------------
@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """``render`` with a model whose map is its input: a painted scene renders as itself.

    The engine is imported first: a module that first imports ``load_model`` while the patch is
    on keeps the identity model for the rest of the process (a later test in this process then
    rendered NAIP with no water at all)."""
    import geomap_gan.model.modelfile as modelfile
    import geomap_gan.rendering.engine  # noqa: F401 (see above)

    monkeypatch.setattr(modelfile, "load_model", lambda *a, **k: identity_model(64, GSD))


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_map(tmp_path / "scene.tif", painted(64, 64))


def test_render_vectors_writes_the_map_then_its_layers(
    identity: None, scene: Path, out: Path
) -> None:
    result = invoke("render", scene, out / "map.tif", "--vectors", out / "map.gpkg")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"wrote {out / 'map.tif'}") and "MP/s" in lines[0]
    assert lines[1].startswith(f"wrote {out / 'map.gpkg'}")
    assert "render" in result.stderr and "vectorize" in result.stderr  # both bars
    assert sorted(p.name for p in out.iterdir()) == ["map.gpkg", "map.tif"]
    with rasterio.open(out / "map.tif") as ds:
        assert (np.moveaxis(ds.read((1, 2, 3)), 0, -1) == painted(64, 64)).all()
    water, _ = layer(out / "map.gpkg", "water")
    x0, y0 = TRANSFORM @ (5, 5)
    x1, y1 = TRANSFORM @ (15, 15)
    assert len(water) == 1 and water[0].equals(shapely.box(x0, y1, x1, y0))
    # --json carries both; --overwrite replaces both
    result = invoke("render", scene, out / "map.tif", "--vectors", out / "map.gpkg",
                    "--overwrite", "--json")  # fmt: skip
    data = json.loads(result.stdout)
    assert data["path"] == str(out / "map.tif")
    assert data["vectors"]["path"] == str(out / "map.gpkg")
    assert data["vectors"]["features"] == {"road": 1, "water": 1, "park": 1, "highway": 1}


def test_render_vectors_progress_json_has_a_vectorize_stage(
    identity: None, scene: Path, out: Path
) -> None:
    result = invoke("render", scene, out / "map.tif", "--vectors", out / "map.gpkg",
                    "--progress", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    stages = [e.get("stage", "render") for e in events if e["event"] == "progress"]
    assert stages[0] == "render" and stages[-1] == "vectorize"
    assert stages == sorted(stages)  # every render event before every vectorize event
    assert events[-1]["event"] == "result" and events[-1]["vectors"]["features"]["water"] == 1


def test_render_vectors_is_checked_before_rendering(
    identity: None, scene: Path, out: Path, tmp_path: Path
) -> None:
    (out / "map.gpkg").write_text("mine")
    line = refused(["render", scene, out / "map.tif", "--vectors", out / "map.gpkg"], out)
    assert "map.gpkg exists; pass --overwrite" in line
    assert (out / "map.gpkg").read_text() == "mine" and not (out / "map.tif").exists()
    assert "suffix .tiff" in refused(
        ["render", scene, out / "map.tif", "--vectors", out / "v.tiff"], out
    )
    tiff_gpkg = write_map(tmp_path / "scene.gpkg", painted(64, 64))  # a GeoTIFF by content
    assert "is the input" in refused(
        ["render", tiff_gpkg, out / "map.tif", "--vectors", tiff_gpkg, "--overwrite"], out
    )
    missing = tmp_path / "nowhere" / "v.gpkg"
    assert "does not exist" in refused(
        ["render", scene, out / "map.tif", "--vectors", missing], out
    )


# ---- render-many --vectors -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    if importlib.util.find_spec("distributed") is None:
        pytest.skip("dask[distributed] is not installed")
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster:  # fmt: skip
        yield cluster.scheduler_address


def test_render_many_vectors_beside_each_map_and_resume(
    scheduler: str, tiny_model_file: Path, tmp_path: Path
) -> None:
    from geomap_gan.vector import vectorize

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_map(scenes / f"{name}.tif", rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    out = tmp_path / "maps"
    base = ["render-many", scenes, "--out-dir", out, "--model", tiny_model_file,
            "--overlap", "8", "--scheduler", scheduler, "--vectors"]  # fmt: skip
    result = invoke(*base, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rendered"] == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "a.gpkg", "a.tif", "b.gpkg", "b.tif", "mosaic.vrt"]  # fmt: skip
    for scene in report["scenes"]:
        assert scene["vectors"] == str(Path(scene["dst"]).with_suffix(".gpkg"))
        # the map vectorized in the task: the same layers as vectorizing the published map
        again = vectorize(scene["dst"], tmp_path / "again.gpkg", VectorizeOptions(overwrite=True))
        assert again.features == scene["vector_features"]
    # a map whose vector file is missing is vectorized only, not rendered again
    mtime = (out / "a.tif").stat().st_mtime_ns
    (out / "a.gpkg").unlink()
    report = json.loads(invoke(*base, "--json").stdout)
    by_name = {Path(s["dst"]).name: s for s in report["scenes"]}
    assert by_name["b.tif"]["status"] == "skipped"
    assert by_name["a.tif"]["vectors"] == str(out / "a.gpkg") and (out / "a.gpkg").is_file()
    assert (out / "a.tif").stat().st_mtime_ns == mtime
    # a vector file without its map is the user's: refused before any work
    (out / "b.tif").unlink()
    line = refused([*base], out)
    assert "b.gpkg exists; pass --overwrite" in line


def test_render_strips_vectors_after_the_assembled_map(
    scheduler: str, tiny_model_file: Path, tmp_path: Path
) -> None:
    from geomap_gan.vector import vectorize

    rng = np.random.default_rng(1)
    scene = write_map(tmp_path / "s.tif", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    args = ["render", scene, out / "m.tif", "--model", tiny_model_file, "--overlap", "8",
            "--scheduler", scheduler, "--strips", "2", "--vectors", out / "m.gpkg"]  # fmt: skip
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["vectors"]["path"] == str(out / "m.gpkg")
    again = vectorize(out / "m.tif", tmp_path / "again.gpkg")
    assert again.features == data["vectors"]["features"]
    assert "exists; pass --overwrite" in refused(args, out)  # checked before any strip
