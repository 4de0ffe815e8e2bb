"""The render engine end to end on tiny generated GeoTIFFs (identity, blur and tiny U-Net models)
and on the real rasters of ../shared/data/geotiff."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from geotiffs import blur_model, identity_model, noise_rgb, write_geotiff
from rasterio.enums import ColorInterp
from shapely.geometry import box

from geomap_gan.errors import InputError, OutputError, OutputExistsError, RenderCancelled
from geomap_gan.model.modelfile import load_model
from geomap_gan.rendering.engine import RenderOptions, plan_render, render
from geomap_gan.rendering.options import EngineSettings
from geomap_gan.rendering.windows import axis_offsets

CI = ColorInterp


def opts(**kw) -> RenderOptions:
    kw.setdefault("overlap", 8)
    kw.setdefault("batch_size", 3)
    kw.setdefault("device", "cpu")
    return RenderOptions(**kw)


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ---- exactness, geometry, file format ------------------------------------------------------------
@pytest.mark.parametrize(("height", "width"), [(75, 97), (20, 13), (33, 32), (130, 64)])
@pytest.mark.parametrize("overlap", [0, 8, 15])
def test_identity_model_reproduces_input_exactly(tmp_path, height, width, overlap):
    data = noise_rgb(height, width)
    src = write_geotiff(tmp_path / "in.tif", data)
    result = render(src, tmp_path / "out.tif", identity_model(), opts(overlap=overlap))
    with rasterio.open(src) as s, rasterio.open(tmp_path / "out.tif") as o:
        assert o.crs == s.crs and o.transform == s.transform
        assert (o.width, o.height, o.count, o.dtypes[0]) == (width, height, 3, "uint8")
        np.testing.assert_array_equal(o.read(), data)  # exactly: weights divide out
        assert list(o.colorinterp) == [CI.red, CI.green, CI.blue]
    assert result.windows == plan_render(src, identity_model(), opts(overlap=overlap)).windows
    assert result.windows_skipped == 0 and result.path == tmp_path / "out.tif"


def test_output_is_tiled_and_compressed_and_takes_creation_options(tmp_path):
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(300, 300))
    render(src, tmp_path / "a.tif", identity_model(), opts())
    with rasterio.open(tmp_path / "a.tif") as o:
        assert o.profile["tiled"] and o.profile["compress"] == "deflate"
        assert o.block_shapes[0] == (256, 256)
    co = {"COMPRESS": "LZW", "BLOCKXSIZE": "128", "BLOCKYSIZE": "128"}
    render(src, tmp_path / "b.tif", identity_model(), opts(creation_options=co))
    with rasterio.open(tmp_path / "b.tif") as o:
        assert o.profile["compress"] == "lzw" and o.block_shapes[0] == (128, 128)
        np.testing.assert_array_equal(o.read(), noise_rgb(300, 300))


def test_cog_output_is_cloud_optimized_with_overviews(tmp_path):
    data = noise_rgb(800, 700)
    src = write_geotiff(tmp_path / "in.tif", data)
    render(src, tmp_path / "cog.tif", identity_model(128), opts(driver="COG"))
    with rasterio.open(tmp_path / "cog.tif") as o:
        assert o.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert o.overviews(1), "a COG this size has overviews"
        assert o.block_shapes[0] == (512, 512)
        np.testing.assert_array_equal(o.read(), data)
    assert leftovers(tmp_path, {"in.tif", "cog.tif"}) == []


# ---- seams ---------------------------------------------------------------------------------------
def test_blending_removes_seams_that_plain_tiling_shows(tmp_path):
    """A zero-padded blur, like a U-Net, goes wrong at the border of each tile. Blended, the tiled
    render equals the blur of the whole scene at once; plain tiling does not, at tile borders."""
    import torch

    yy, xx = np.mgrid[0:200, 0:200]
    smooth = 128 + 100 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    data = np.repeat(smooth[None], 3, axis=0).astype(np.uint8)
    src = write_geotiff(tmp_path / "in.tif", data)
    x = torch.from_numpy(np.pad(data, ((0, 0), (2, 2), (2, 2)), mode="reflect")[None]).float()
    ideal = blur_model().generator(x / 127.5 - 1)[0].add(1).mul(127.5).round().detach().numpy()
    ideal = ideal[:, 2:-2, 2:-2]  # the whole scene blurred in one pass, reflected at its edges

    render(src, tmp_path / "blend.tif", blur_model(), opts(overlap=12, amp=False))
    with rasterio.open(tmp_path / "blend.tif") as o:
        assert np.abs(o.read().astype(int) - ideal).max() <= 1

    render(src, tmp_path / "plain.tif", blur_model(), opts(overlap=0))
    with rasterio.open(tmp_path / "plain.tif") as o:
        err = np.abs(o.read().astype(int) - ideal).mean(axis=(0, 1))
    borders = [b for s in axis_offsets(200, 32, 0) for b in (s - 1, s) if 0 < s < 200]
    inside = np.setdiff1d(np.arange(200), borders)
    assert err[borders].mean() > 5 and err[borders].mean() > 3 * err[inside].mean()


# ---- nodata, masks, AOI --------------------------------------------------------------------------
def test_nodata_becomes_alpha_and_empty_windows_are_skipped(tmp_path):
    data = noise_rgb(100, 120)
    data[data == 0] = 1
    data[:, :, :60] = 0  # left half is nodata
    data[:, 40:50, 80:90] = 0  # a hole
    src = write_geotiff(tmp_path / "in.tif", data, nodata=0)
    result = render(src, tmp_path / "out.tif", identity_model(), opts())
    with rasterio.open(tmp_path / "out.tif") as o:
        assert o.count == 4 and o.colorinterp[3] == CI.alpha
        out = o.read()
    nodata = (data == 0).all(axis=0)
    np.testing.assert_array_equal(out[3] == 0, nodata)
    assert (out[:3, nodata] == 0).all()
    np.testing.assert_array_equal(out[:3, ~nodata], data[:, ~nodata])
    assert result.windows_skipped > 0


def test_alpha_band_and_internal_mask_are_honoured(tmp_path):
    rgb = noise_rgb(64, 64)
    alpha = np.full((1, 64, 64), 255, np.uint8)
    alpha[0, 20:40, 10:30] = 0
    src = write_geotiff(
        tmp_path / "a.tif", np.concatenate([rgb, alpha]), colorinterp=[CI.red, CI.green, CI.blue, CI.alpha]
    )  # fmt: skip
    render(src, tmp_path / "oa.tif", identity_model(), opts())
    with rasterio.open(tmp_path / "oa.tif") as o:
        np.testing.assert_array_equal(o.read(4), alpha[0])
    masked = tmp_path / "m.tif"
    profile = dict(driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32631")
    with (
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(masked, "w", transform=Affine(2, 0, 0, 0, -2, 0), **profile) as d,
    ):
        d.write(rgb)
        d.write_mask(alpha[0])
    assert not (tmp_path / "m.tif.msk").exists()
    render(masked, tmp_path / "om.tif", identity_model(), opts())
    with rasterio.open(tmp_path / "om.tif") as o:
        np.testing.assert_array_equal(o.read(4) > 0, alpha[0] > 0)


def test_aoi_limits_windows_and_masks_outside(tmp_path):
    data = noise_rgb(128, 128)
    src = write_geotiff(tmp_path / "in.tif", data, res=1.0)
    x0, y1 = 500_000.0, 5_000_000.0
    aoi = box(x0 + 10, y1 - 40, x0 + 50, y1 - 10).wkt  # columns 10..50, rows 10..40
    result = render(src, tmp_path / "out.tif", identity_model(gsd=1.0),
                    opts(aoi=aoi, aoi_crs="EPSG:32631"))  # fmt: skip
    with rasterio.open(tmp_path / "out.tif") as o:
        out = o.read()
    inside = np.zeros((128, 128), bool)
    inside[10:40, 10:50] = True
    np.testing.assert_array_equal(out[3] > 0, inside)
    np.testing.assert_array_equal(out[:3, inside], data[:, inside])
    assert (out[:3, ~inside] == 0).all()
    assert result.windows_skipped > result.windows > 0


def test_aoi_with_native_output(tmp_path):
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(80, 80), res=0.5)
    aoi = box(500_010, 4_999_980, 500_030, 4_999_990).wkt  # cols 20..60, rows 20..40 at 0.5 m
    render(src, tmp_path / "out.tif", identity_model(gsd=1.0),
           opts(aoi=aoi, aoi_crs="EPSG:32631", output_res="native"))  # fmt: skip
    with rasterio.open(tmp_path / "out.tif") as o:
        assert (o.width, o.height) == (80, 80)
        rows, cols = np.nonzero(o.read(4))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 39, 20, 59)


def test_aoi_in_wgs84_is_reprojected(tmp_path):
    from rasterio.warp import transform_geom

    src = write_geotiff(tmp_path / "in.tif", noise_rgb(100, 100), res=1.0)
    utm = box(500_020, 4_999_950, 500_060, 4_999_990)
    lonlat = transform_geom("EPSG:32631", "EPSG:4326", utm.__geo_interface__)
    render(src, tmp_path / "out.tif", identity_model(gsd=1.0), opts(aoi=json.dumps(lonlat)))
    with rasterio.open(tmp_path / "out.tif") as o:
        alpha = o.read(4) > 0
    rows, cols = np.nonzero(alpha)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 49, 20, 59)


def test_aoi_outside_scene_is_an_error(tmp_path):
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(50, 50))
    far = box(600_000, 4_000_000, 600_100, 4_000_100).wkt
    with pytest.raises(InputError, match="does not overlap"):
        render(src, tmp_path / "o.tif", identity_model(), opts(aoi=far, aoi_crs="EPSG:32631"))
    assert leftovers(tmp_path, {"in.tif"}) == []


# ---- ground sample distance ----------------------------------------------------------------------
def test_scene_is_rendered_at_the_model_gsd(tmp_path):
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(200, 160), res=0.5)
    result = render(src, tmp_path / "out.tif", identity_model(gsd=2.0), opts())
    with rasterio.open(src) as s, rasterio.open(tmp_path / "out.tif") as o:
        assert o.res == pytest.approx((2.0, 2.0))
        assert (o.width, o.height) == (40, 50)
        assert (o.transform.c, o.transform.f) == (s.transform.c, s.transform.f)
        assert o.bounds == pytest.approx(s.bounds)
    assert result.gsd == pytest.approx(2.0) and result.scene_gsd == pytest.approx(0.5)
    # --gsd overrides the model card
    render(src, tmp_path / "o1.tif", identity_model(gsd=2.0), opts(gsd=1.0))
    with rasterio.open(tmp_path / "o1.tif") as o:
        assert o.res == pytest.approx((1.0, 1.0))


def test_native_output_res_writes_on_the_input_grid(tmp_path):
    yy, xx = np.mgrid[0:120, 0:100]
    smooth = (128 + 90 * np.sin(xx / 15.0 + yy / 20.0)).astype(np.uint8)
    data = np.stack([smooth, 255 - smooth, smooth // 2])
    data[:, :10] = 0
    src = write_geotiff(tmp_path / "in.tif", data, res=0.5, nodata=0)
    render(src, tmp_path / "out.tif", identity_model(gsd=1.0), opts(output_res="native"))
    with rasterio.open(src) as s, rasterio.open(tmp_path / "out.tif") as o:
        assert (o.width, o.height, o.transform, o.crs) == (s.width, s.height, s.transform, s.crs)
        out = o.read()
    np.testing.assert_array_equal(out[3] == 0, (data == 0).all(axis=0))
    valid = out[3] > 0
    valid[10:13] = False  # next to the nodata edge the coarse render mixes in nodata
    assert np.abs(out[:3, valid].astype(int) - data[:, valid]).mean() < 4
    assert leftovers(tmp_path, {"in.tif", "out.tif"}) == []


def test_web_mercator_uses_ground_metres(tmp_path):
    lat = 60.0
    y = 6378137.0 * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    t = Affine(2.0, 0, 1_000_000, 0, -2.0, y + 100)
    src = write_geotiff(tmp_path / "wm.tif", noise_rgb(100, 100), crs="EPSG:3857", transform=t)
    plan = plan_render(src, identity_model(gsd=2.0), opts())
    assert plan.scene_gsd == pytest.approx(1.0, rel=0.01)  # 2 nominal metres are 1 m at 60 N
    assert plan.width == pytest.approx(50, abs=1)
    assert plan.transform[0] == pytest.approx(4.0, rel=0.01)


def test_geographic_scene(tmp_path):
    t = Affine(0.0001, 0, 10.0, 0, -0.0001, 60.0)
    src = write_geotiff(tmp_path / "ll.tif", noise_rgb(80, 80), crs="EPSG:4326", transform=t)
    plan = plan_render(src, identity_model(gsd=2.0), opts())
    assert plan.scene_gsd == pytest.approx((5.58 + 11.14) / 2, rel=0.01)
    assert plan.width == pytest.approx(80 * 5.58 / 2, abs=1)
    assert plan.height == pytest.approx(80 * 11.14 / 2, abs=1)


# ---- data types ----------------------------------------------------------------------------------
def test_uint16_is_stretched_and_scale_option_is_linear(tmp_path):
    ramp16 = np.tile(np.linspace(0, 4000, 64).astype(np.uint16), (3, 64, 1))
    src = write_geotiff(tmp_path / "u16.tif", ramp16)
    render(src, tmp_path / "auto.tif", identity_model(), opts())
    render(src, tmp_path / "fixed.tif", identity_model(), opts(scale=(0, 8000)))
    with rasterio.open(tmp_path / "auto.tif") as a, rasterio.open(tmp_path / "fixed.tif") as f:
        auto, fixed = a.read(1), f.read(1)
    assert auto.min() == 0 and auto.max() == 255  # 2-98 percentile stretch saturates the ends
    assert fixed.max() == pytest.approx(128, abs=1)  # 4000 of 8000
    assert (np.diff(fixed[0].astype(int)) >= 0).all()


def test_float_nan_is_nodata(tmp_path):
    data = np.random.default_rng(0).uniform(0, 1, (4, 40, 40))
    data[:, :5, :] = np.nan
    src = write_geotiff(tmp_path / "f64.tif", data, photometric="MINISBLACK")
    render(src, tmp_path / "out.tif", identity_model(), opts())
    with rasterio.open(tmp_path / "out.tif") as o:
        # no nodata flag in the input, yet NaN is no colour: transparent, not opaque black
        assert o.count == 4
        assert (o.read(4)[:5] == 0).all() and (o.read(4)[5:] == 255).all()
        assert (o.read([1, 2, 3])[:, :5] == 0).all()


# ---- progress, cancel, strips ----------------------------------------------------------------------
def test_progress_and_cancel(tmp_path):
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(100, 100))
    calls: list[tuple[int, int]] = []
    render(
        src,
        tmp_path / "out.tif",
        identity_model(),
        opts(),
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[0] == (0, calls[-1][1])  # the bar's clock starts with the windows
    checks = []

    def cancel() -> bool:
        checks.append(1)
        return len(checks) >= 2

    with pytest.raises(RenderCancelled):
        render(src, tmp_path / "c.tif", identity_model(), opts(), cancel=cancel)
    assert leftovers(tmp_path, {"in.tif", "out.tif"}) == []


def test_strips_assemble_to_the_whole_render(tmp_path, tiny_model_file):
    model = load_model(tiny_model_file)
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(90, 70))
    render(src, tmp_path / "whole.tif", model, opts(amp=False))
    plan = plan_render(src, model, opts())
    strips = plan.strips(3)
    assert len(strips) == 3 and strips[0][0] == 0 and strips[-1][1] == 90
    parts = []
    for i, rows in enumerate(strips):
        out = tmp_path / f"s{i}.tif"
        render(src, out, model, opts(amp=False), engine=EngineSettings(row_range=rows))
        with rasterio.open(out) as o:
            assert o.transform.f == pytest.approx(plan.transform[5] + rows[0] * plan.transform[4])
            parts.append(o.read())
    with rasterio.open(tmp_path / "whole.tif") as o:
        whole = o.read()
    assert np.abs(np.concatenate(parts, axis=1).astype(int) - whole).max() <= 1


def test_without_aot_a_failing_torch_compile_falls_back_to_eager(tmp_path, monkeypatch, caplog):
    """On a torch without AOTInductor the engine uses torch.compile; if that fails at the
    first batch (no C++ compiler), the render goes on in eager mode."""
    import torch

    from geomap_gan.model import aot

    def broken_compile(net, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(aot, "available", lambda: False)
    monkeypatch.setattr(torch, "compile", broken_compile)
    data = noise_rgb(40, 50)
    src = write_geotiff(tmp_path / "in.tif", data)
    render(src, tmp_path / "out.tif", identity_model(), opts(compile=True))
    with rasterio.open(tmp_path / "out.tif") as o:
        np.testing.assert_array_equal(o.read(), data)
    assert "compiled generator failed" in caplog.text


def test_column_panels_match_the_whole_render(tmp_path, tiny_model_file):
    model = load_model(tiny_model_file)
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(60, 700))
    render(
        src, tmp_path / "whole.tif", model, opts(amp=False), engine=EngineSettings(panel_width=0)
    )
    calls: list[tuple[int, int]] = []
    render(src, tmp_path / "panels.tif", model, opts(amp=False),
           progress=lambda d, t: calls.append((d, t)), engine=EngineSettings(panel_width=256))  # fmt: skip
    with rasterio.open(tmp_path / "whole.tif") as a, rasterio.open(tmp_path / "panels.tif") as b:
        assert np.abs(a.read().astype(int) - b.read()).max() <= 1
    assert calls[-1][0] == calls[-1][1]


def test_the_plan_line_counts_the_window_runs_the_summary_counts(tmp_path, tiny_model_file, caplog):
    """Panels re-run the windows on their edges: the -v line, the bar and the summary agree."""
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(60, 700))
    with caplog.at_level(logging.INFO, logger="geomap_gan.rendering.engine"):
        result = render(src, tmp_path / "o.tif", load_model(tiny_model_file), opts(amp=False),
                        engine=EngineSettings(panel_width=256))  # fmt: skip
    line = next(r.getMessage() for r in caplog.records if "render grid" in r.getMessage())
    runs = result.windows + result.windows_skipped
    assert f", {runs} windows of " in line and "distinct; those on panel edges run twice" in line


# ---- bad input and output ------------------------------------------------------------------------
def test_bad_inputs(tmp_path):
    model = identity_model()
    with pytest.raises(InputError, match="does not exist"):
        render(tmp_path / "missing.tif", tmp_path / "o.tif", model, opts())
    (tmp_path / "text.tif").write_text("not a raster")
    with pytest.raises(InputError, match="not a raster"):
        render(tmp_path / "text.tif", tmp_path / "o.tif", model, opts())
    grey = write_geotiff(tmp_path / "grey.tif", noise_rgb(10, 10, bands=1))
    with pytest.raises(InputError, match="colour"):
        render(grey, tmp_path / "o.tif", model, opts())
    plain = write_geotiff(tmp_path / "plain.tif", noise_rgb(10, 10), crs=None)
    with pytest.raises(InputError, match="no CRS"):
        render(plain, tmp_path / "o.tif", model, opts())
    rgb = write_geotiff(tmp_path / "rgb.tif", noise_rgb(10, 10))
    with pytest.raises(InputError, match="out of range"):
        render(rgb, tmp_path / "o.tif", model, opts(bands=(1, 2, 4)))
    with pytest.raises(InputError, match="overlap"):
        render(rgb, tmp_path / "o.tif", model, opts(overlap=32))
    assert not (tmp_path / "o.tif").exists()


def test_ungeoreferenced_allowed_renders_in_pixel_space(tmp_path):
    data = noise_rgb(30, 40)
    plain = write_geotiff(tmp_path / "plain.tif", data, crs=None)
    result = render(plain, tmp_path / "o.tif", identity_model(), opts(allow_ungeoreferenced=True))
    assert result.crs is None and result.gsd is None
    with rasterio.open(tmp_path / "o.tif") as o:
        np.testing.assert_array_equal(o.read(), data)


def test_bad_outputs(tmp_path):
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(10, 10))
    with pytest.raises(OutputError, match="is the input"):
        render(src, src, identity_model(), opts(overwrite=True))
    with pytest.raises(OutputError, match="does not exist"):
        render(src, tmp_path / "no" / "o.tif", identity_model(), opts())
    (tmp_path / "o.tif").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        render(src, tmp_path / "o.tif", identity_model(), opts())
    assert (tmp_path / "o.tif").read_bytes() == b"old"
    render(src, tmp_path / "o.tif", identity_model(), opts(overwrite=True))
    with rasterio.open(tmp_path / "o.tif") as o:
        assert o.count == 3


def test_read_only_output_folder(tmp_path, monkeypatch):
    """A folder the process may not write in (patched: CI runs as root, which may write
    anywhere) is a one-line OutputError and leaves nothing."""
    from geomap_gan import files

    src = write_geotiff(tmp_path / "in.tif", noise_rgb(10, 10))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.os, "open", refuse)
    with pytest.raises(OutputError, match="cannot write"):
        render(src, tmp_path / "o.tif", identity_model(), opts())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def _corrupt_copies(tmp_path: Path) -> list[Path]:
    data = noise_rgb(200, 200, seed=3)
    prof = dict(tiled=True, blockxsize=64, blockysize=64)
    jpeg = write_geotiff(tmp_path / "jpeg.tif", data, compress="jpeg", **prof)
    deflate = write_geotiff(tmp_path / "deflate.tif", data, compress="deflate", **prof)
    damaged = bytearray(jpeg.read_bytes())
    start = len(damaged) // 3
    damaged[start : start + 4000] = bytes((i * 7919) % 256 for i in range(4000))
    (tmp_path / "damaged_jpeg.tif").write_bytes(bytes(damaged))
    raw = deflate.read_bytes()
    (tmp_path / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    return [tmp_path / "damaged_jpeg.tif", tmp_path / "truncated.tif"]


def test_corrupt_tiffs_fail_cleanly(tmp_path):
    for bad in _corrupt_copies(tmp_path):
        with pytest.raises(InputError, match="truncated or corrupt"):
            render(bad, tmp_path / "out.tif", identity_model(), opts())
        assert not (tmp_path / "out.tif").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---- real data -----------------------------------------------------------------------------------
def test_real_rasters(tmp_path, geotiff_dir, tiny_model_file):
    """Every shared GeoTIFF renders (a tiny U-Net for one, identity for speed elsewhere): CRS and
    footprint kept, masks carried over."""
    cases = {
        "drone_alpha_irregular.tif": {},  # 0.35 m, alpha band, irregular footprint
        "landsat_rgb_byte.tif": {"gsd": 300},  # nodata collar
        "landsat_like_rgb_uint16.tif": {"gsd": 60},  # 16 bit
        "ms_float64_4band.tif": {"gsd": 2},  # float64, no colour interpretation
        "naip_nd_2015.tif": {"gsd": 10},  # 4 bands R,G,B,NIR
    }
    for name, extra in cases.items():
        src = geotiff_dir / name
        out = tmp_path / name
        model = load_model(tiny_model_file) if name.startswith("drone") else identity_model(128)
        result = render(src, out, model, opts(amp=False, **extra))
        with rasterio.open(src) as s, rasterio.open(out) as o:
            assert o.crs == s.crs, name
            # Same footprint within half an output pixel; a resampled grid sits on the CRS
            # lattice of its pixel size (multiples of it, as GDAL's -tap)
            half = o.res[0] / 2
            assert o.bounds.left == pytest.approx(s.bounds.left, abs=half), name
            assert o.bounds.top == pytest.approx(s.bounds.top, abs=half), name
            if o.res != s.res:
                assert o.transform.c / o.res[0] == pytest.approx(round(o.transform.c / o.res[0]))
                assert o.transform.f / o.res[1] == pytest.approx(round(o.transform.f / o.res[1]))
            assert o.bounds.right == pytest.approx(s.bounds.right, abs=o.res[0])
            assert o.bounds.bottom == pytest.approx(s.bounds.bottom, abs=o.res[1])
            src_valid = (s.dataset_mask() > 0).mean()
            out_valid = (o.read(4) > 0).mean() if o.count == 4 else 1.0
            assert out_valid == pytest.approx(src_valid, abs=0.02), name
            assert o.read([1, 2, 3]).std() > 0, name
        assert result.windows > 0


@pytest.mark.slow
def test_default_model_map_does_not_depend_on_the_window_grid(tmp_path, geotiff_dir):
    """With the bundled (bounded-receptive-field) model on a real photo, two window sizes give
    the same map: exactly in fp32, and in bf16 up to rounding (oneDNN picks other kernels for
    other shapes), where before v2 window borders showed a checkerboard of ~224 px squares."""
    src = geotiff_dir / "naip_nd_2015.tif"
    images = []
    for window in (512, 1024):
        out = tmp_path / f"o{window}.tif"
        render(src, out, None, RenderOptions(window=window))
        with rasterio.open(out) as o:
            images.append(o.read([1, 2, 3]).astype(int))
    diff = np.abs(images[0] - images[1])
    assert diff.mean() < 0.2 and (diff.max(axis=0) > 8).mean() < 0.002, (diff.mean(), diff.max())


def test_output_gets_the_usual_file_permissions(tmp_path: Path) -> None:
    """The temporary file is made with mode 0600; the finished output must follow the umask."""
    import stat

    src = write_geotiff(tmp_path / "in.tif", noise_rgb(40, 40))
    dst = tmp_path / "out.tif"
    old = os.umask(0o022)
    try:
        render(src, dst, identity_model(), RenderOptions(overlap=8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o644


def test_batch_size_zero_means_the_device_default(tmp_path, monkeypatch):
    from geomap_gan.rendering import engine
    from geomap_gan.rendering.inference import AUTO_BATCH

    seen: list[int] = []
    real = engine.TileRunner

    def recording(model, device, amp, weights, batch_size, *args):
        seen.append(batch_size)
        return real(model, device, amp, weights, batch_size, *args)

    monkeypatch.setattr(engine, "TileRunner", recording)
    data = noise_rgb(40, 50)
    src = write_geotiff(tmp_path / "in.tif", data)
    render(src, tmp_path / "out.tif", identity_model(), opts(batch_size=0))
    assert seen == [AUTO_BATCH["cpu"]]
    with rasterio.open(tmp_path / "out.tif") as o:
        np.testing.assert_array_equal(o.read(), data)
    with pytest.raises(InputError, match="batch-size"):
        render(src, tmp_path / "bad.tif", identity_model(), opts(batch_size=-1))
