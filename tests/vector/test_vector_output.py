"""Output formats, refusals that leave no file behind, georeferencing and progress."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from vector_maps import GSD, canvas, paint, read_layer, write_map

from geomap_gan.errors import InputError, OutputError, OutputExistsError
from geomap_gan.vector import VectorizeOptions, vectorize
from geomap_gan.vector.masks import _ground_scale


def small_map() -> np.ndarray:
    img = paint(canvas(40, 40), "water", slice(5, 15), slice(5, 15))
    paint(img, "park", slice(20, 30), slice(5, 15))
    paint(img, "road", slice(18, 22), slice(20, 40))
    return paint(img, "highway", slice(0, 40), slice(30, 35))


@pytest.mark.parametrize("suffix", [".gpkg", ".fgb", ".geojson", ".shp"])
def test_each_format_writes_and_reads_back(tmp_path, outputs, suffix):
    src = write_map(tmp_path / "m.tif", small_map())
    result = vectorize(src, outputs / f"map{suffix}")
    expected = {"road": 1, "water": 1, "park": 1, "highway": 1}
    assert result.features == expected
    for layer, path in result.paths.items():
        name = layer if suffix == ".gpkg" else None
        if suffix == ".gpkg":
            assert path == outputs / "map.gpkg"
        else:
            assert path == outputs / f"map_{layer}{suffix}"
        info = pyogrio.read_info(path, layer=name)
        assert info["geometry_type"] == ("Polygon" if layer in ("water", "park") else "LineString")
        assert rasterio.crs.CRS.from_user_input(info["crs"]) == rasterio.crs.CRS.from_epsg(32633)
        geoms, fields = read_layer(path, name)
        assert len(geoms) == expected[layer] and fields["class"].tolist() == [layer]
        wanted = {"class", "area_m2"} if layer in ("water", "park") else {
            "class", "length_m", "width_m"}  # fmt: skip
        assert set(fields) == wanted
    leftovers = {p.name for p in outputs.iterdir()} - {
        p.with_suffix(s).name
        for p in result.paths.values()
        for s in ([".shp", ".shx", ".dbf", ".prj", ".cpg"] if suffix == ".shp" else [suffix])
    }
    assert not leftovers  # fmt: skip


def test_one_layer_in_a_single_layer_format_takes_the_given_name(tmp_path, outputs):
    result = vectorize(write_map(tmp_path / "m.tif", small_map()), outputs / "lakes.geojson",
                       VectorizeOptions(layers="water"))  # fmt: skip
    assert result.paths == {"water": outputs / "lakes.geojson"}
    assert sorted(p.name for p in outputs.iterdir()) == ["lakes.geojson"]


def refusal(src: Path, dst: Path, options: VectorizeOptions | None = None) -> str:
    """The one-line message of an InputError / OutputExistsError, checking nothing was left."""
    before = sorted(dst.parent.iterdir())
    with pytest.raises((InputError, OutputExistsError, OutputError)) as err:
        vectorize(src, dst, options)
    assert sorted(dst.parent.iterdir()) == before
    message = str(err.value)
    assert "\n" not in message
    return message


def test_bad_inputs_are_refused_and_leave_no_file(tmp_path, outputs):
    img = small_map()
    one_band = write_map(tmp_path / "gray.tif", img[..., :1])
    assert "3-band" in refusal(one_band, outputs / "m.gpkg")
    wide = write_map(tmp_path / "u16.tif", img.astype(np.uint16) * 200)
    assert "8-bit" in refusal(wide, outputs / "m.gpkg")
    bare = write_map(tmp_path / "bare.tif", img, crs=None)
    assert "no CRS" in refusal(bare, outputs / "m.gpkg")
    missing = refusal(tmp_path / "nope.tif", outputs / "m.gpkg")
    assert "cannot read nope.tif" in missing
    src = write_map(tmp_path / "m.tif", img)
    assert "use one of .gpkg" in refusal(src, outputs / "m.kml")
    with pytest.raises(InputError, match="unknown map class roads.*choose layers"):
        VectorizeOptions(layers="water,roads")
    with pytest.raises(InputError, match="min_area must be a number >= 0"):
        VectorizeOptions(min_area=-1)


def test_an_existing_output_is_kept_without_overwrite(tmp_path, outputs):
    src = write_map(tmp_path / "m.tif", small_map())
    (outputs / "m_road.shp").write_text("not mine")
    assert "exists; pass --overwrite" in refusal(src, outputs / "m.shp")
    assert (outputs / "m_road.shp").read_text() == "not mine"
    (outputs / "m_road.shp").unlink()
    (outputs / "m_water.dbf").write_text("a stray part of a shapefile")
    assert "m_water.dbf exists" in refusal(src, outputs / "m.shp")
    vectorize(src, outputs / "m.shp", VectorizeOptions(overwrite=True))
    assert len(read_layer(outputs / "m_water.shp")[0]) == 1


def test_the_input_is_never_the_output(tmp_path):
    src = write_map(tmp_path / "m.gpkg", small_map())  # a GeoTIFF by content
    with pytest.raises(OutputError):
        vectorize(src, src, VectorizeOptions(overwrite=True))
    assert src.exists()


def test_a_failed_write_leaves_nothing(tmp_path, outputs, monkeypatch):
    import geomap_gan.vector.writer as writer

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("simulated write failure")

    monkeypatch.setattr(writer, "write", broken)
    with pytest.raises(OSError, match="simulated"):
        vectorize(write_map(tmp_path / "m.tif", small_map()), outputs / "m.gpkg")
    assert list(outputs.iterdir()) == []


def test_ungeoreferenced_maps_need_the_flag(tmp_path, outputs):
    src = write_map(tmp_path / "bare.tif", small_map(), crs=None, transform=Affine.identity())
    opts = VectorizeOptions(layers="water", allow_ungeoreferenced=True, simplify=0)
    vectorize(src, outputs / "m.gpkg", opts)
    geoms, fields = read_layer(outputs / "m.gpkg")
    assert pyogrio.read_info(outputs / "m.gpkg")["crs"] is None
    # pixel coordinates, and metres at the model's GSD
    assert geoms[0].bounds == pytest.approx((5, 5, 15, 15))
    assert fields["area_m2"][0] == pytest.approx(100 * GSD * GSD)


def test_a_geographic_map_measures_in_metres(tmp_path, outputs):
    step = 2e-5  # degrees: about 1.7 m x 2.2 m at 40 N
    t = Affine(step, 0, 10.0, 0, -step, 40.0)
    src = write_map(tmp_path / "geo.tif", small_map(), crs="EPSG:4326", transform=t)
    vectorize(src, outputs / "m.gpkg", VectorizeOptions(layers="water", simplify=0))
    _, fields = read_layer(outputs / "m.gpkg")
    sx, sy = _ground_scale(rasterio.crs.CRS.from_epsg(4326), t, 40, 40)
    assert fields["area_m2"][0] == pytest.approx(100 * step * step * sx * sy)
    assert 100 * 1.6 * 2.1 < fields["area_m2"][0] < 100 * 1.8 * 2.3
    assert math.isfinite(fields["area_m2"][0])


def test_progress_reports_rows(tmp_path, outputs):
    seen: list[tuple[int, int]] = []
    vectorize(write_map(tmp_path / "m.tif", small_map()), outputs / "m.gpkg",
              VectorizeOptions(strip_rows=16), progress=lambda d, t: seen.append((d, t)))  # fmt: skip
    assert seen == [(16, 40), (32, 40), (40, 40)]
