"""``pairs``: crafted layers drawn with exactly the expected pixels, the render grid and the
spatial split, co-registration on real data, and bad inputs (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from PIL import Image

from geomap_gan.cli import cli
from geomap_gan.errors import InputError, OutputError, OutputExistsError, RenderCancelled
from geomap_gan.legend import BACKGROUND, COLOURS, class_masks
from geomap_gan.training.draw import STROKE_PX, default_widths, measure_stroke_widths
from geomap_gan.training.layers import LayerSpec
from geomap_gan.training.pairs import PairsOptions, make_pairs
from geomap_gan.training.split import candidate_origins, choose_split, split_tiles

GSD = 2.0  # the tiny model's (tests/conftest.py: tile 32, 5 levels, stride 32)
SIZE = 256
# Origin on the CRS lattice of 2 m x stride 32: column and row of the origin are multiples of 32.
ORIGIN = (448000.0, 5000000.0)
UTM = "EPSG:32631"


def write_scene(path: Path, size: int = SIZE, crs: str = UTM, seed: int = 0) -> np.ndarray:
    """A uint8 RGB scene at the tiny model's GSD (so its render grid is its own pixel grid)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (3, size, size), dtype=np.uint8)
    t = Affine(GSD, 0, ORIGIN[0], 0, -GSD, ORIGIN[1])
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3,
                       dtype="uint8", crs=crs, transform=t) as ds:  # fmt: skip
        ds.write(data)
    return data


def to_world(geom: object) -> object:
    """Grid pixel coordinates (column, row) -> the scene's CRS."""
    t = Affine(GSD, 0, ORIGIN[0], 0, -GSD, ORIGIN[1])
    return shapely.transform(geom, lambda xy: np.column_stack(apply(t, xy[:, 0], xy[:, 1])))


def apply(t: Affine, x: object, y: object) -> tuple:
    """Pixel (x, y) -> CRS coordinates (north-up transforms)."""
    return t.c + t.a * np.asarray(x), t.f + t.e * np.asarray(y)


def write_layer(path: Path, geoms: list, crs: str | None = UTM, fields: dict | None = None,
                to: str | None = None, layer: str | None = None) -> Path:  # fmt: skip
    """Geometries given in grid pixels, written in the scene CRS (or reprojected to ``to``)."""
    import pyogrio.raw
    from pyproj import Transformer

    world = [to_world(g) for g in geoms]
    if to is not None:
        tr = Transformer.from_crs(UTM, to, always_xy=True)
        world = [shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
                 for g in world]  # fmt: skip
        crs = to
    fields = fields or {}
    kind = {"Polygon": "Polygon", "LineString": "LineString"}[world[0].geom_type]
    driver = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".shp": "ESRI Shapefile",
              ".fgb": "FlatGeobuf"}[path.suffix]  # fmt: skip
    pyogrio.raw.write(
        str(path), shapely.to_wkb(np.array(world, dtype=object)),
        [np.asarray(v) for v in fields.values()], list(fields), driver=driver,
        geometry_type=kind, crs=crs, layer=layer, append=layer is not None and path.exists(),
    )  # fmt: skip
    return path


def expected_map(draw: dict[str, np.ndarray]) -> np.ndarray:
    out = np.empty((SIZE, SIZE, 3), np.uint8)
    out[:] = BACKGROUND
    for name in ("park", "water", "road", "highway"):
        if name in draw:
            out[draw[name]] = COLOURS[name]
    return out


def read_pair(path: Path) -> tuple[np.ndarray, np.ndarray]:
    im = np.asarray(Image.open(path).convert("RGB"))
    half = im.shape[1] // 2
    return im[:, :half], im[:, half:]


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "scene.tif"
    return path, write_scene(path)


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[list[str], np.ndarray]:
    """Water, park, road and highway layers in three formats and two CRSs, and the map they must
    draw: pixel (row, col) takes a class when its centre lies inside the class's geometry."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    water = write_layer(tmp_path / "water.geojson", [shapely.box(10, 20, 40, 50)], to="EPSG:4326")
    park = write_layer(tmp_path / "park.fgb", [shapely.box(30, 30, 90, 60)])
    road = write_layer(
        tmp_path / "roads.gpkg",
        [shapely.LineString([(-20, 100), (300, 100)]), shapely.LineString([(-20, 150), (300, 150)]),
         shapely.LineString([(200, -20), (200, 300)])],
        fields={"kind": np.array(["residential", "footway", "residential"], dtype=object),
                "width": np.array([0.0, 0.0, 8.0])},
    )  # fmt: skip
    highway = write_layer(tmp_path / "hw.gpkg", [shapely.LineString([(25.5, -20), (25.5, 300)])])
    draw = {
        "park": (cols > 30) & (cols < 90) & (rows > 30) & (rows < 60),
        "water": (cols > 10) & (cols < 40) & (rows > 20) & (rows < 50),
        # --width road=4: 2 px about y=100; the width attribute 8 m: 4 px about x=200
        "road": ((rows > 99) & (rows < 101)) | ((cols > 198) & (cols < 202)),
        # --width highway=6: 3 px about x=25.5
        "highway": (cols > 24) & (cols < 27),
    }
    layers = [f"water={water}", f"park={park}", f"road={road}:kind=residential",
              f"highway={highway}"]  # fmt: skip
    return layers, expected_map(draw)


def run_pairs(tiny_model_file: Path, scene: Path, out: Path, *extra: str) -> object:
    return CliRunner().invoke(
        cli,
        ["pairs", str(scene), str(out), "--model", str(tiny_model_file), "--tile", "64", "--step",
         "32", "--block", "64", "-q", *extra],
    )  # fmt: skip


def test_crafted_layers_draw_exact_pixels(tiny_model_file, scene, crafted, tmp_path):
    src, data = scene
    layers, expected = crafted
    out = tmp_path / "pairs"
    args = [a for spec in layers for a in ("--layer", spec)]
    result = run_pairs(tiny_model_file, src, out, *args, "--width", "road=4", "--width",
                       "highway=6")  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "pairs.json").read_text())
    assert manifest["gsd"] == GSD and manifest["crs"] == UTM
    assert manifest["style"]["stroke_width_m"] == {"road": 4.0, "highway": 6.0}
    assert {x["class"] for x in manifest["layers"]} == {"water", "park", "road", "highway"}
    assert manifest["pairs"], "no pairs"
    t = Affine(*manifest["grid"]["transform"])
    for pair in manifest["pairs"]:
        x, y, w, h = pair["window"]
        a, b = read_pair(out / pair["file"])
        assert w == h == (64 if pair["split"] == "train" else 32)
        np.testing.assert_array_equal(a, data[:, y : y + h, x : x + w].transpose(1, 2, 0))
        np.testing.assert_array_equal(b, expected[y : y + h, x : x + w], err_msg=pair["file"])
        left, bottom, right, top = pair["bounds"]
        assert (left, top) == pytest.approx(apply(t, x, y), abs=1e-6)
        assert (right, bottom) == pytest.approx(apply(t, x + w, y + h), abs=1e-6)
    # every class drawn somewhere, and read back by the legend's rules as drawn
    masks = class_masks(expected)
    assert all(masks[c].any() for c in ("water", "park", "road", "highway"))


def test_default_widths_are_the_measured_ones():
    assert default_widths(1.8881) == {"road": 4.27, "highway": 6.25}
    assert STROKE_PX == {"road": 2.26, "highway": 3.31}


def test_measure_stroke_widths_of_drawn_strokes():
    """The estimator gives back the width strokes were drawn with."""
    img = np.empty((200, 200, 3), np.uint8)
    img[:] = BACKGROUND
    img[50:53, 10:190] = COLOURS["road"]  # 3 px road
    img[10:190, 100:105] = COLOURS["highway"]  # 5 px highway, crossing the road
    found = measure_stroke_widths([img])
    assert found["highway"][0] == pytest.approx(5, abs=0.1)
    assert found["road"][0] == pytest.approx(3, abs=0.2)


def test_split_is_spatial_and_val_never_touches_train():
    origins = candidate_origins(1024, 1024, 64, 32, (0, 0))
    train, val, dropped, blocks = split_tiles(origins, 64, 32, 0.2, 128, (0, 0), seed=3)
    assert len(val) >= 0.2 * len(origins) and blocks >= 1
    assert len(train) + len(val) + dropped == len(origins)
    v = np.array(val)
    for x, y in train:
        touch = (
            (x <= v[:, 0] + 32) & (v[:, 0] <= x + 64) & (y <= v[:, 1] + 32) & (v[:, 1] <= y + 64)
        )
        assert not touch.any()
    # whole blocks: every tile of a chosen block is val
    key = {(o[0] + 32) // 128 * 1000 + (o[1] + 32) // 128 for o in val}
    assert all(((o[0] + 32) // 128 * 1000 + (o[1] + 32) // 128 in key) == (o in set(val))
               for o in origins)  # fmt: skip
    assert split_tiles(origins, 64, 32, 0.2, 128, (0, 0), seed=3)[1] == val  # seeded


def test_chosen_block_keeps_training_tiles_on_a_small_area():
    """35 tiles at a 64 px step: blocks of 4 steps would send all to val or next to it."""
    origins = candidate_origins(560, 723, 286, 64, (0, 0))
    assert not split_tiles(origins, 286, 256, 0.15, 256, (0, 0), 0)[0]
    train, val, dropped, _, block = choose_split(origins, 286, 256, 0.15, 0, 64, (0, 0), 0)
    assert len(train) >= 5 and len(val) >= 0.15 * len(origins) and block in (64, 128, 256)
    assert len(train) + len(val) + dropped == len(origins)


def test_tiles_lie_inside_coverage_and_valid_pixels(tiny_model_file, tmp_path):
    src = tmp_path / "scene.tif"
    data = write_scene(src)
    with rasterio.open(src, "r+") as ds:  # nodata in the top-left corner
        ds.nodata = 0
        data[:, :40, :40] = 0
        ds.write(data)
    water = write_layer(tmp_path / "w.gpkg", [shapely.box(0, 0, 256, 128)])
    cover = write_layer(tmp_path / "cover.gpkg", [shapely.box(0, 0, 200, 256)])
    out = tmp_path / "pairs"
    result = run_pairs(tiny_model_file, src, out, "--layer", f"water={water}", "--coverage",
                       str(cover), "--val-share", "0")  # fmt: skip
    assert result.exit_code == 0, result.output
    for pair in json.loads((out / "pairs.json").read_text())["pairs"]:
        x, y, w, h = pair["window"]
        assert x + w <= 200, "outside the coverage"
        assert not (x < 40 and y < 40), "over nodata"


def test_map_raster_is_reprojected_onto_the_grid(tiny_model_file, scene, tmp_path):
    """A map raster on another grid (here the scene itself, cut by 5 px and in EPSG:4326) lands
    on the scene's pixels: B matches A within the resampling error."""
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject

    src, data = scene
    smooth = np.repeat(np.repeat(data[:, ::8, ::8], 8, axis=1), 8, axis=2)  # 16 m blocks
    with rasterio.open(src, "r+") as ds:
        ds.write(smooth)
    geo = tmp_path / "map4326.tif"
    with rasterio.open(src) as ds:
        t, w, h = calculate_default_transform(ds.crs, "EPSG:4326", ds.width, ds.height,
                                              *ds.bounds, resolution=GSD / 111320 / 2)  # fmt: skip
        with rasterio.open(geo, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8",
                           crs="EPSG:4326", transform=t) as dst:  # fmt: skip
            for b in (1, 2, 3):
                reproject(
                    rasterio.band(ds, b), rasterio.band(dst, b), resampling=Resampling.nearest
                )
    out = tmp_path / "pairs"
    result = run_pairs(tiny_model_file, src, out, "--map", str(geo), "--val-share", "0")
    assert result.exit_code == 0, result.output
    diffs, shifted = [], []
    for pair in json.loads((out / "pairs.json").read_text())["pairs"]:
        a, b = read_pair(out / pair["file"])
        diffs.append(np.abs(a.astype(int) - b.astype(int)).mean())
        shifted.append(np.abs(a[:, 1:].astype(int) - a[:, :-1].astype(int)).mean())
    # about 2.2 grey levels (two resamplings blur the block edges); a map half a pixel off would
    # differ by half of what a one-pixel shift gives (about 10.6 here)
    assert diffs and max(diffs) < 0.4 * min(shifted), (diffs, shifted)


# ---- bad inputs: one line, exit 2, nothing written -----------------------------------------------
def _bad(tiny_model_file, src, out, *args):
    result = run_pairs(tiny_model_file, src, out, *args)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_bad_inputs(tiny_model_file, scene, tmp_path):
    src, _ = scene
    out = tmp_path / "pairs"
    water = write_layer(tmp_path / "w.gpkg", [shapely.box(0, 0, 100, 100)])
    no_crs = write_layer(tmp_path / "nocrs.shp", [shapely.box(0, 0, 100, 100)], crs=None)
    far = tmp_path / "far.gpkg"
    write_layer(far, [shapely.box(5000, 5000, 5100, 5100)])
    cover_far = tmp_path / "cover_far.gpkg"
    write_layer(cover_far, [shapely.box(-900, -900, -800, -800)])
    assert "CRS" in _bad(tiny_model_file, src, out, "--layer", f"water={no_crs}")
    assert "not a map class" in _bad(tiny_model_file, src, out, "--layer", f"river={water}")
    assert "does not overlap" in _bad(tiny_model_file, src, out, "--layer", f"water={far}")
    msg = _bad(tiny_model_file, src, out, "--layer", f"water={water}", "--coverage", str(cover_far))
    assert "coverage" in msg and "does not overlap" in msg
    assert "--layer" in _bad(tiny_model_file, src, out)  # neither layers nor a map
    assert "no field" in _bad(tiny_model_file, src, out, "--layer", f"water={water}:kind=lake")
    assert "--width" in _bad(tiny_model_file, src, out, "--layer", f"water={water}", "--width",
                             "road=-1")  # fmt: skip
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert "other files" in _bad(tiny_model_file, src, out, "--layer", f"water={water}")
    assert "not an earlier pairs output" in _bad(
        tiny_model_file, src, out, "--layer", f"water={water}", "--overwrite"
    )
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_overwrite_replaces_an_earlier_pairs_folder(tiny_model_file, scene, tmp_path):
    src, _ = scene
    water = write_layer(tmp_path / "w.gpkg", [shapely.box(0, 0, 100, 100)])
    out = tmp_path / "pairs"
    assert run_pairs(tiny_model_file, src, out, "--layer", f"water={water}").exit_code == 0
    again = run_pairs(tiny_model_file, src, out, "--layer", f"water={water}")
    assert again.exit_code == 2 and "--overwrite" in again.output
    ok = run_pairs(tiny_model_file, src, out, "--layer", f"water={water}", "--overwrite",
                   "--step", "64")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert json.loads((out / "pairs.json").read_text())["tiles"]["step"] == 64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("how", ["cancel", "interrupt"])
def test_interrupted_run_leaves_nothing(tiny_model_file, scene, tmp_path, how):
    src, _ = scene
    water = write_layer(tmp_path / "w.gpkg", [shapely.box(0, 0, 100, 100)])
    out = tmp_path / "pairs"
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if how == "interrupt" and done == 3:
            raise KeyboardInterrupt

    def cancel() -> bool:
        return how == "cancel" and len(calls) >= 3

    error = RenderCancelled if how == "cancel" else KeyboardInterrupt
    with pytest.raises(error):
        make_pairs(src, out, [f"water={water}"], options=PairsOptions(tile=64, step=32),
                   model=tiny_model_file, progress=progress, cancel=cancel)  # fmt: skip
    assert calls and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_multi_layer_geopackage_and_width_m(tiny_model_file, scene, tmp_path):
    """A GeoPackage of several layers (as vectorize writes): the layer named as the class, or
    FILE|layername=NAME; a line's width_m attribute sets its stroke."""
    src, _ = scene
    gpkg = tmp_path / "map.gpkg"
    write_layer(gpkg, [shapely.box(10, 10, 60, 60)], layer="water")
    write_layer(gpkg, [shapely.box(100, 100, 160, 160)], layer="green")
    write_layer(gpkg, [shapely.LineString([(-9, 200.5), (300, 200.5)])], layer="road",
                fields={"width_m": np.array([6.0])})  # fmt: skip
    out = tmp_path / "pairs"
    ok = run_pairs(tiny_model_file, src, out, "--layer", f"water={gpkg}", "--layer",
                   f"park={gpkg}|layername=green", "--layer", f"road={gpkg}", "--val-share", "0",
                   "--tile", "256", "--step", "256")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    manifest = json.loads((out / "pairs.json").read_text())
    assert [(x["class"], x["layer"]) for x in manifest["layers"]] == [
        ("water", "water"), ("park", "green"), ("road", "road")]  # fmt: skip
    _, b = read_pair(out / manifest["pairs"][0]["file"])
    masks = class_masks(b)
    assert masks["water"][10:60, 10:60].all() and masks["park"][100:160, 100:160].all()
    assert masks["road"][:, 100].sum() == 3  # 6 m = 3 px about y = 200.5
    msg = _bad(tiny_model_file, src, tmp_path / "other", "--layer", f"highway={gpkg}")
    assert "3 layers" in msg and "layername" in msg
    assert "no layer" in _bad(tiny_model_file, src, tmp_path / "other", "--layer",
                              f"park={gpkg}|layername=parks")  # fmt: skip


def test_a_killed_run_s_scratch_folder_goes_with_the_next_run(tiny_model_file, scene, tmp_path):
    import os
    import subprocess

    from geomap_gan import files

    src, _ = scene
    water = write_layer(tmp_path / "w.gpkg", [shapely.box(0, 0, 100, 100)])
    out = tmp_path / "pairs"
    child = subprocess.Popen(["true"])
    child.wait()
    name = files.temp_path(out, "pairs").name.replace(f"-{os.getpid()}-", f"-{child.pid}-")
    stale = files.make_dir(tmp_path / name, "pairs")  # what a SIGKILL leaves
    (stale / "train").mkdir()
    assert run_pairs(tiny_model_file, src, out, "--layer", f"water={water}").exit_code == 0
    assert not stale.exists() and (out / "pairs.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_layer_spec_parsing():
    assert LayerSpec.parse("road=osm.gpkg:highway=primary,highway=secondary") == LayerSpec(
        "road", "osm.gpkg", (("highway", "primary"), ("highway", "secondary"))
    )
    assert LayerSpec.parse("water=C:/data/lakes.gpkg") == LayerSpec("water", "C:/data/lakes.gpkg")
    assert LayerSpec.parse("water=C:/d/map.gpkg|layername=a") == LayerSpec(
        "water", "C:/d/map.gpkg|layername=a"
    )
    assert LayerSpec.parse("road=m.gpkg|layername=r:kind=x").filters == (("kind", "x"),)
    with pytest.raises(InputError):
        LayerSpec.parse("lakes.gpkg")
    with pytest.raises(InputError, match="not a map class"):
        LayerSpec.parse("building=b.gpkg")


def test_library_errors_are_typed(tiny_model_file, scene, tmp_path):
    src, _ = scene
    water = write_layer(tmp_path / "w.gpkg", [shapely.box(0, 0, 100, 100)])
    with pytest.raises(OutputError):
        make_pairs(src, tmp_path / "missing" / "pairs", [f"water={water}"], model=tiny_model_file)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(OutputExistsError):
        make_pairs(src, tmp_path / "full", [f"water={water}"], model=tiny_model_file)


# ---- real data: co-registration and the GSD in metres ---------------------------------------------
@pytest.fixture
def naip(geotiff_dir: Path) -> Path:
    return geotiff_dir / "naip_nd_2015.tif"


def test_map_of_the_scene_itself_is_co_registered(naip, tmp_path):
    """``--map`` = the scene: A equals B (the same grid, the same resampling); the scene cut by a
    few pixels (another grid, so GDAL's warper): within the resampling error."""
    from rasterio.windows import Window

    cut = tmp_path / "cut.tif"
    with rasterio.open(naip) as ds:
        win = Window(7, 5, ds.width - 20, ds.height - 15)
        profile = ds.profile | {"width": win.width, "height": win.height,
                                "transform": ds.window_transform(win)}  # fmt: skip
        with rasterio.open(cut, "w", **profile) as dst:
            dst.write(ds.read(window=win))
    for name, map_raster, limit in (("same", naip, 0.0), ("cut", cut, 1.0)):
        out = tmp_path / name
        result = CliRunner().invoke(cli, ["pairs", str(naip), str(out), "--map", str(map_raster),
                                          "-q", "--step", "512"])  # fmt: skip
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "pairs.json").read_text())
        diffs = [np.abs(np.subtract(*read_pair(out / p["file"]), dtype=float)).mean()
                 for p in manifest["pairs"]]  # fmt: skip
        assert len(diffs) >= 4 and np.mean(diffs) <= limit, (name, diffs)


def test_geographic_and_utm_scenes_are_cut_at_the_model_gsd_in_metres(naip, tmp_path):
    from pyproj import Geod
    from rasterio.warp import calculate_default_transform, reproject

    geo = tmp_path / "naip4326.tif"
    with rasterio.open(naip) as ds:
        t, w, h = calculate_default_transform(ds.crs, "EPSG:4326", ds.width, ds.height, *ds.bounds)
        with rasterio.open(geo, "w", **(ds.profile | {"crs": "EPSG:4326", "transform": t,
                                                       "width": w, "height": h})) as dst:  # fmt: skip
            reproject(rasterio.band(ds, list(range(1, 5))), rasterio.band(dst, list(range(1, 5))))
    geod = Geod(ellps="WGS84")
    for scene in (naip, geo):
        out = tmp_path / scene.stem
        result = CliRunner().invoke(cli, ["pairs", str(scene), str(out), "--map", str(naip),
                                          "-q", "--step", "512"])  # fmt: skip
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "pairs.json").read_text())
        assert manifest["gsd"] == pytest.approx(1.8881)
        for p in manifest["pairs"][:3]:
            left, bottom, right, top = p["bounds"]
            size = p["window"][2]
            if scene == geo:
                mid = (bottom + top) / 2
                width_m = geod.inv(left, mid, right, mid)[2]
                height_m = geod.inv(left, bottom, left, top)[2]
            else:
                width_m, height_m = right - left, top - bottom
            assert width_m / size == pytest.approx(1.8881, rel=2e-3)
            assert height_m / size == pytest.approx(1.8881, rel=2e-3)
